using System.Diagnostics;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Kmem.Diagnostics;

namespace Kmem.Tracing.Emit;

/*
 * Tracepoints: Linux's kmem, vmalloc, vmscan and oom tracepoints, emitted by kmem's allocators.
 *
 * 1. Cost when off. Each event has one static bool (KmallocOn, MmPageAllocOn, ...). A hook is
 *    `if (Tracepoints.MmPageAllocOn) Tracepoints.MmPageAlloc(...)`: one load of a static field and a branch the
 *    predictor learns, the emitter itself NoInlining so the hot path's code size barely grows. (Linux uses static
 *    keys, patched jumps; a static bool is the closest managed equivalent.)
 * 2. When on, an emitter fills a TraceRecord (80 bytes, no references: texts are ids into Labels) and stores it
 *    in the calling CPU's native ring buffer (TraceRingBuffer: overwrite or stop mode, lost events counted).
 *    Recording allocates nothing after a text's first use (Labels interns call sites, comms and cache names). The
 *    slab events' call_site is the label the caller passes: kmalloc/kfree/kmem_cache_alloc/free take
 *    [CallerMemberName], so it is the calling method's name, known at compile time; only a caller that passes an
 *    empty label makes SlabTrace walk the stack (a StackTrace per event: microseconds and a managed allocation).
 * 3. Output: FtraceWriter prints the records as trace_pipe does (TASK-PID [CPU] FLAGS TIMESTAMP: event: fields),
 *    with each event's TP_printk field order from include/trace/events/{kmem,vmalloc,vmscan,oom}.h, so
 *    FtraceReader (and kmem replay) read kmem's traces exactly as Linux's. Pointers are printed unhashed (as with
 *    no_hash_pointers); call_site is a label formatted like %pS: "name+0x0/0x0".
 * 4. Global, like ftrace: one buffer per process (Start/Stop). Events of every machine go to it.
 */

/// <summary>kmem's tracepoints: per-event enable flags and emitters. See the design notes in this file.</summary>
public static class Tracepoints
{
    public static bool KmallocOn, KfreeOn, KmemCacheAllocOn, KmemCacheFreeOn;
    public static bool MmPageAllocOn, MmPageFreeOn, MmPageFreeBatchedOn, MmPageAllocZoneLockedOn, MmPageAllocExtfragOn;
    public static bool AllocVmapAreaOn, FreeVmapAreaNoflushOn, PurgeVmapAreaLazyOn;
    public static bool KswapdWakeOn, KswapdSleepOn, DirectReclaimBeginOn, DirectReclaimEndOn, MarkVictimOn;

    private static TraceRingBuffer? s_buffer;
    private static long s_origin = Stopwatch.GetTimestamp();

    /// <summary>Texts the records refer to (call sites, comms, cache names). Id 0 is "".</summary>
    public static TraceStringTable Labels { get; } = new();
    private static readonly Lock s_labelLock = new();

    /// <summary>The buffer events go to, or null when tracing was never started.</summary>
    public static TraceRingBuffer? Buffer => s_buffer;

    /// <summary>Sends events to <paramref name="buffer"/> and restarts the clock. Enable events separately.</summary>
    public static void Start(TraceRingBuffer buffer)
    {
        s_origin = Stopwatch.GetTimestamp();
        s_buffer = buffer ?? throw new ArgumentNullException(nameof(buffer));
    }

    /// <summary>Disables every event and detaches the buffer (returned, for writing out).</summary>
    public static TraceRingBuffer? Stop()
    {
        DisableAll();
        var b = s_buffer;
        s_buffer = null;
        return b;
    }

    /// <summary>Every event kind kmem emits.</summary>
    public static IReadOnlyList<EventKind> All { get; } = Enum.GetValues<EventKind>().Where(k => k != EventKind.None).ToArray();

    /// <summary>Turns one event on or off (events/kmem/NAME/enable).</summary>
    public static void Enable(EventKind kind, bool on = true)
    {
        switch (kind)
        {
            case EventKind.Kmalloc: KmallocOn = on; break;
            case EventKind.Kfree: KfreeOn = on; break;
            case EventKind.KmemCacheAlloc: KmemCacheAllocOn = on; break;
            case EventKind.KmemCacheFree: KmemCacheFreeOn = on; break;
            case EventKind.MmPageAlloc: MmPageAllocOn = on; break;
            case EventKind.MmPageFree: MmPageFreeOn = on; break;
            case EventKind.MmPageFreeBatched: MmPageFreeBatchedOn = on; break;
            case EventKind.MmPageAllocZoneLocked: MmPageAllocZoneLockedOn = on; break;
            case EventKind.MmPageAllocExtfrag: MmPageAllocExtfragOn = on; break;
            case EventKind.AllocVmapArea: AllocVmapAreaOn = on; break;
            case EventKind.FreeVmapAreaNoflush: FreeVmapAreaNoflushOn = on; break;
            case EventKind.PurgeVmapAreaLazy: PurgeVmapAreaLazyOn = on; break;
            case EventKind.MmVmscanKswapdWake: KswapdWakeOn = on; break;
            case EventKind.MmVmscanKswapdSleep: KswapdSleepOn = on; break;
            case EventKind.MmVmscanDirectReclaimBegin: DirectReclaimBeginOn = on; break;
            case EventKind.MmVmscanDirectReclaimEnd: DirectReclaimEndOn = on; break;
            case EventKind.MarkVictim: MarkVictimOn = on; break;
            default: throw new ArgumentOutOfRangeException(nameof(kind), kind, "not a tracepoint");
        }
    }

    /// <summary>Is <paramref name="kind"/> enabled?</summary>
    public static bool IsEnabled(EventKind kind) => kind switch
    {
        EventKind.Kmalloc => KmallocOn, EventKind.Kfree => KfreeOn, EventKind.KmemCacheAlloc => KmemCacheAllocOn,
        EventKind.KmemCacheFree => KmemCacheFreeOn, EventKind.MmPageAlloc => MmPageAllocOn, EventKind.MmPageFree => MmPageFreeOn,
        EventKind.MmPageFreeBatched => MmPageFreeBatchedOn, EventKind.MmPageAllocZoneLocked => MmPageAllocZoneLockedOn,
        EventKind.MmPageAllocExtfrag => MmPageAllocExtfragOn, EventKind.AllocVmapArea => AllocVmapAreaOn,
        EventKind.FreeVmapAreaNoflush => FreeVmapAreaNoflushOn, EventKind.PurgeVmapAreaLazy => PurgeVmapAreaLazyOn,
        EventKind.MmVmscanKswapdWake => KswapdWakeOn, EventKind.MmVmscanKswapdSleep => KswapdSleepOn,
        EventKind.MmVmscanDirectReclaimBegin => DirectReclaimBeginOn, EventKind.MmVmscanDirectReclaimEnd => DirectReclaimEndOn,
        EventKind.MarkVictim => MarkVictimOn, _ => false,
    };

    /// <summary>Enables every event.</summary>
    public static void EnableAll()
    {
        foreach (EventKind k in All) Enable(k);
    }

    /// <summary>Disables every event.</summary>
    public static void DisableAll()
    {
        foreach (EventKind k in All) Enable(k, false);
    }

    /// <summary>Id of a text in <see cref="Labels"/>.</summary>
    public static int Label(string text)
    {
        lock (s_labelLock) return Labels.Intern(text.AsSpan());
    }

    // The flags column from the calling thread's kmem context (Context.PreemptCount, IrqsDisabled), as
    // tracing_gen_ctx does from preempt_count and the CPU's IF flag: irqs-off, bh-off (softirqs disabled but not
    // being served), softirq, hardirq, NMI, and the preempt depth (preempt_count & 0xf; migrate-disable stays 0).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static (byte Context, byte Preempt) CurrentFlags()
    {
        int pc = Kmem.Context.PreemptCount;
        TraceContextFlags f = TraceContextFlags.None;
        if (Kmem.Context.IrqsDisabled) f |= TraceContextFlags.IrqsOff;
        if ((pc & Kmem.Context.HardirqMask) != 0) f |= TraceContextFlags.Hardirq;
        if ((pc & Kmem.Context.SoftirqOffset) != 0) f |= TraceContextFlags.Softirq;
        if ((pc & Kmem.Context.SoftirqMask & ~Kmem.Context.SoftirqOffset) != 0) f |= TraceContextFlags.BhOff;
        int preempt = Math.Min(pc & Kmem.Context.PreemptMask, 0xf);
        if ((pc & Kmem.Context.NmiMask) != 0) preempt |= TraceRecord.NmiBit; // TraceContextFlags.Nmi does not fit the byte
        return ((byte)f, (byte)preempt);
    }

    private static TraceRecord Header(EventKind kind, int cpus)
    {
        TraceRecord r = default;
        (r.Context, r.Preempt) = CurrentFlags();
        r.Kind = kind;
        r.Ticks = Stopwatch.GetTimestamp() - s_origin;
        r.Cpu = (byte)Cpu.Current(Math.Max(1, cpus));
        r.Pid = CurrentTask.Pid;
        r.CommId = Label(CurrentTask.Comm);
        return r;
    }

    private static void Commit(in TraceRecord r) => s_buffer?.Write(r);

    private static int Cpus => s_buffer?.Cpus ?? 1;

    // ------------------------------------------------------------------ kmem: slab

    /// <summary>trace_kmalloc.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Kmalloc(string callSite, nint ptr, long bytesReq, long bytesAlloc, Gfp gfp, int node = -1, bool accounted = false)
    {
        var r = Header(EventKind.Kmalloc, Cpus);
        r.CallSite = Label(callSite); r.A = (ulong)ptr; r.C = bytesReq; r.D = bytesAlloc; r.Gfp = (uint)gfp; r.Extra = node; r.Extra2 = accounted ? 1 : 0;
        Commit(r);
    }

    /// <summary>trace_kfree.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Kfree(string callSite, nint ptr)
    {
        var r = Header(EventKind.Kfree, Cpus);
        r.CallSite = Label(callSite); r.A = (ulong)ptr;
        Commit(r);
    }

    /// <summary>trace_kmem_cache_alloc.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void KmemCacheAlloc(string callSite, nint ptr, string name, long bytesReq, long bytesAlloc, Gfp gfp, int node = -1, bool accounted = false)
    {
        var r = Header(EventKind.KmemCacheAlloc, Cpus);
        r.CallSite = Label(callSite); r.A = (ulong)ptr; r.Name = Label(name); r.C = bytesReq; r.D = bytesAlloc; r.Gfp = (uint)gfp; r.Extra = node; r.Extra2 = accounted ? 1 : 0;
        Commit(r);
    }

    /// <summary>trace_kmem_cache_free.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void KmemCacheFree(string callSite, nint ptr, string name)
    {
        var r = Header(EventKind.KmemCacheFree, Cpus);
        r.CallSite = Label(callSite); r.A = (ulong)ptr; r.Name = Label(name);
        Commit(r);
    }

    // ------------------------------------------------------------------ kmem: pages

    /// <summary>trace_mm_page_alloc.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void MmPageAlloc(nint page, long pfn, int order, int migratetype, Gfp gfp)
    {
        var r = Header(EventKind.MmPageAlloc, Cpus);
        r.A = (ulong)page; r.B = (ulong)pfn; r.Order = order; r.Extra = migratetype; r.Gfp = (uint)gfp;
        Commit(r);
    }

    /// <summary>trace_mm_page_free.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void MmPageFree(nint page, long pfn, int order)
    {
        var r = Header(EventKind.MmPageFree, Cpus);
        r.A = (ulong)page; r.B = (ulong)pfn; r.Order = order;
        Commit(r);
    }

    /// <summary>trace_mm_page_free_batched.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void MmPageFreeBatched(nint page, long pfn)
    {
        var r = Header(EventKind.MmPageFreeBatched, Cpus);
        r.A = (ulong)page; r.B = (ulong)pfn;
        Commit(r);
    }

    /// <summary>trace_mm_page_alloc_zone_locked.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void MmPageAllocZoneLocked(nint page, long pfn, int order, int migratetype, bool percpuRefill)
    {
        var r = Header(EventKind.MmPageAllocZoneLocked, Cpus);
        r.A = (ulong)page; r.B = (ulong)pfn; r.Order = order; r.Extra = migratetype; r.Extra2 = percpuRefill ? 1 : 0;
        Commit(r);
    }

    /// <summary>trace_mm_page_alloc_extfrag.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void MmPageAllocExtfrag(nint page, long pfn, int allocOrder, int fallbackOrder, int allocMigratetype, int fallbackMigratetype)
    {
        var r = Header(EventKind.MmPageAllocExtfrag, Cpus);
        r.A = (ulong)page; r.B = (ulong)pfn; r.Order = allocOrder; r.Extra2 = fallbackOrder; r.Extra = allocMigratetype; r.Extra3 = fallbackMigratetype;
        Commit(r);
    }

    // ------------------------------------------------------------------ vmalloc

    /// <summary>trace_alloc_vmap_area.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void AllocVmapArea(ulong vaStart, ulong size, ulong align, ulong vstart, ulong vend, bool failed)
    {
        var r = Header(EventKind.AllocVmapArea, Cpus);
        r.A = vaStart; r.B = size; r.C = (long)align; r.D = (long)vstart; r.E = vend; r.Extra = failed ? 1 : 0;
        Commit(r);
    }

    /// <summary>trace_free_vmap_area_noflush.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void FreeVmapAreaNoflush(ulong vaStart, ulong nrLazy, ulong nrLazyMax)
    {
        var r = Header(EventKind.FreeVmapAreaNoflush, Cpus);
        r.A = vaStart; r.B = nrLazy; r.C = (long)nrLazyMax;
        Commit(r);
    }

    /// <summary>trace_purge_vmap_area_lazy.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void PurgeVmapAreaLazy(ulong start, ulong end, uint numPurged)
    {
        var r = Header(EventKind.PurgeVmapAreaLazy, Cpus);
        r.A = start; r.B = end; r.Extra = (int)numPurged;
        Commit(r);
    }

    // ------------------------------------------------------------------ vmscan, oom

    /// <summary>trace_mm_vmscan_kswapd_wake.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void KswapdWake(int nid, int zid, int order)
    {
        var r = Header(EventKind.MmVmscanKswapdWake, Cpus);
        r.Extra = nid; r.Extra2 = zid; r.Order = order;
        Commit(r);
    }

    /// <summary>trace_mm_vmscan_kswapd_sleep.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void KswapdSleep(int nid)
    {
        var r = Header(EventKind.MmVmscanKswapdSleep, Cpus);
        r.Extra = nid;
        Commit(r);
    }

    /// <summary>trace_mm_vmscan_direct_reclaim_begin.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void DirectReclaimBegin(int order, Gfp gfp)
    {
        var r = Header(EventKind.MmVmscanDirectReclaimBegin, Cpus);
        r.Order = order; r.Gfp = (uint)gfp;
        Commit(r);
    }

    /// <summary>trace_mm_vmscan_direct_reclaim_end.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void DirectReclaimEnd(ulong nrReclaimed)
    {
        var r = Header(EventKind.MmVmscanDirectReclaimEnd, Cpus);
        r.B = nrReclaimed;
        Commit(r);
    }

    /// <summary>trace_mark_victim.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void MarkVictim(int pid)
    {
        var r = Header(EventKind.MarkVictim, Cpus);
        r.Extra = pid;
        Commit(r);
    }
}

/// <summary>Prints <see cref="TraceRecord"/>s as ftrace's trace_pipe does.</summary>
public static class FtraceWriter
{
    /// <summary>Writes the buffer's records (merged by time) with a trace header; returns the number of lines.</summary>
    public static long Write(TextWriter w, TraceRingBuffer buffer)
    {
        ArgumentNullException.ThrowIfNull(w);
        ArgumentNullException.ThrowIfNull(buffer);
        List<TraceRecord> records = buffer.Snapshot();
        long written = 0;
        for (int c = 0; c < buffer.Cpus; c++) written += buffer.Written(c);
        w.Write("# tracer: nop\n#\n");
        w.Write(string.Create(CultureInfo.InvariantCulture, $"# entries-in-buffer/entries-written: {records.Count}/{written}   #P:{buffer.Cpus}\n#\n"));
        for (int c = 0; c < buffer.Cpus; c++)
        {
            if (buffer.Lost(c) > 0) w.Write(string.Create(CultureInfo.InvariantCulture, $"CPU:{c} [LOST {buffer.Lost(c)} EVENTS]\n"));
        }
        var sb = new StringBuilder(256);
        foreach (TraceRecord r in records)
        {
            sb.Clear();
            Format(sb, r);
            sb.Append('\n');
            w.Write(sb);
        }
        return records.Count;
    }

    /// <summary>One line (no newline) for <paramref name="r"/>.</summary>
    public static void Format(StringBuilder sb, in TraceRecord r)
    {
        var inv = CultureInfo.InvariantCulture;
        var labels = Tracepoints.Labels;
        string comm = labels[r.CommId];
        if (comm.Length == 0) comm = "<...>";
        long us = (long)(r.Ticks * (1_000_000.0 / Stopwatch.Frequency));
        sb.Append(inv, $"{comm,16}-{r.Pid,-7} [{r.Cpu:000}] ");
        AppendFlags(sb, r);
        sb.Append(inv, $" {us / 1_000_000,5}.{us % 1_000_000:000000}: {r.Kind.TraceName()}: ");
        string gfpText = GfpFormat.Format((Gfp)r.Gfp);
        string site = labels[r.CallSite] + "+0x0/0x0";
        switch (r.Kind)
        {
            case EventKind.Kmalloc:
                sb.Append(inv, $"call_site={site} ptr={r.A:x16} bytes_req={r.C} bytes_alloc={r.D} gfp_flags={gfpText} node={r.Extra} accounted={(r.Extra2 != 0 ? "true" : "false")}");
                break;
            case EventKind.Kfree:
                sb.Append(inv, $"call_site={site} ptr={r.A:x16}");
                break;
            case EventKind.KmemCacheAlloc:
                sb.Append(inv, $"call_site={site} ptr={r.A:x16} name={labels[r.Name]} bytes_req={r.C} bytes_alloc={r.D} gfp_flags={gfpText} node={r.Extra} accounted={(r.Extra2 != 0 ? "true" : "false")}");
                break;
            case EventKind.KmemCacheFree:
                sb.Append(inv, $"call_site={site} ptr={r.A:x16} name={labels[r.Name]}");
                break;
            case EventKind.MmPageAlloc:
                sb.Append(inv, $"page={r.A:x16} pfn=0x{r.B:x} order={r.Order} migratetype={r.Extra} gfp_flags={gfpText}");
                break;
            case EventKind.MmPageFree:
                sb.Append(inv, $"page={r.A:x16} pfn=0x{r.B:x} order={r.Order}");
                break;
            case EventKind.MmPageFreeBatched:
                sb.Append(inv, $"page={r.A:x16} pfn=0x{r.B:x} order=0");
                break;
            case EventKind.MmPageAllocZoneLocked:
                sb.Append(inv, $"page={r.A:x16} pfn=0x{r.B:x} order={r.Order} migratetype={r.Extra} percpu_refill={r.Extra2}");
                break;
            case EventKind.MmPageAllocExtfrag:
                sb.Append(inv, $"page={r.A:x16} pfn=0x{r.B:x} alloc_order={r.Order} fallback_order={r.Extra2} pageblock_order={PageAlloc.Zone.PageblockOrder} alloc_migratetype={r.Extra} fallback_migratetype={r.Extra3} fragmenting={(r.Extra2 < PageAlloc.Zone.PageblockOrder ? 1 : 0)} change_ownership={(r.Extra == r.Extra3 ? 1 : 0)}");
                break;
            case EventKind.AllocVmapArea:
                sb.Append(inv, $"va_start={r.A} size={r.B} align={r.C} vstart=0x{r.D:x} vend=0x{r.E:x} failed={r.Extra}");
                break;
            case EventKind.FreeVmapAreaNoflush:
                sb.Append(inv, $"va_start={r.A} nr_lazy={r.B} nr_lazy_max={r.C}");
                break;
            case EventKind.PurgeVmapAreaLazy:
                sb.Append(inv, $"start=0x{r.A:x} end=0x{r.B:x} num_purged={(uint)r.Extra}");
                break;
            case EventKind.MmVmscanKswapdWake:
                sb.Append(inv, $"nid={r.Extra} order={r.Order}");
                break;
            case EventKind.MmVmscanKswapdSleep:
                sb.Append(inv, $"nid={r.Extra}");
                break;
            case EventKind.MmVmscanDirectReclaimBegin:
                sb.Append(inv, $"order={r.Order} gfp_flags={gfpText}");
                break;
            case EventKind.MmVmscanDirectReclaimEnd:
                sb.Append(inv, $"nr_reclaimed={r.B}");
                break;
            case EventKind.MarkVictim:
                sb.Append(inv, $"pid={r.Extra}");
                break;
        }
    }

    // trace_print_lat_fmt: irqs, need-resched, hardirq/softirq, preempt depth, migrate-disable depth.
    private static void AppendFlags(StringBuilder sb, in TraceRecord r)
    {
        var c = (TraceContextFlags)r.Context;
        bool irqs = (c & TraceContextFlags.IrqsOff) != 0, bh = (c & TraceContextFlags.BhOff) != 0;
        sb.Append(irqs && bh ? 'D' : irqs ? 'd' : bh ? 'b' : '.');
        sb.Append('.');
        bool hard = (c & TraceContextFlags.Hardirq) != 0, soft = (c & TraceContextFlags.Softirq) != 0;
        bool nmi = (r.Preempt & TraceRecord.NmiBit) != 0;
        sb.Append(nmi && hard ? 'Z' : nmi ? 'z' : hard && soft ? 'H' : hard ? 'h' : soft ? 's' : '.');
        int p = r.Preempt & 0xf, m = (r.Preempt >> 4) & 7;
        sb.Append(p == 0 ? '.' : "0123456789abcdef"[p]);
        sb.Append(m == 0 ? '.' : "0123456789abcdef"[m]);
    }
}
