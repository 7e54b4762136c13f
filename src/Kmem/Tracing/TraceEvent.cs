using System.Runtime.CompilerServices;

namespace Kmem.Tracing;

/// <summary>
/// One parsed ftrace line of a kmem-related event: the common header (task, CPU, context, time) and the event's
/// fields. A plain, blittable record: strings (comm, call site, cache name, GFP text) are ids into the
/// <see cref="TraceStringTable"/> of the reader that produced it, so events can be copied and stored in arrays
/// without touching the GC heap. Fields an event kind does not print stay zero.
/// <para>Field use per kind (ftrace names in parentheses):</para>
/// <list type="bullet">
/// <item>slab: <see cref="CallSiteId"/>, <see cref="Ptr"/>, <see cref="BytesReq"/>, <see cref="BytesAlloc"/>,
/// <see cref="Gfp"/>, <see cref="Node"/>, <see cref="Accounted"/>, <see cref="CacheNameId"/> (name).</item>
/// <item>pages: <see cref="Ptr"/> (page, hashed), <see cref="Pfn"/>, <see cref="Order"/>, <see cref="MigrateType"/>,
/// <see cref="Gfp"/>; extfrag adds <see cref="FallbackOrder"/>, <see cref="FallbackMigrateType"/>;
/// zone_locked sets <see cref="PercpuRefill"/>.</item>
/// <item>vmalloc: <see cref="VaStart"/>, <see cref="Size"/>, <see cref="Align"/>, <see cref="VStart"/>,
/// <see cref="VEnd"/>, <see cref="Failed"/>; free_vmap_area_noflush: <see cref="VaStart"/>, <see cref="NrLazy"/>,
/// <see cref="NrLazyMax"/>; purge_vmap_area_lazy: <see cref="VStart"/> (start), <see cref="VEnd"/> (end),
/// <see cref="NrPurged"/> (num_purged).</item>
/// <item>vmscan: <see cref="Node"/> (nid), <see cref="Order"/>, <see cref="Gfp"/>, <see cref="NrReclaimed"/>.</item>
/// <item>mark_victim: <see cref="VictimPid"/> (pid).</item>
/// </list>
/// </summary>
public struct TraceEvent
{
    // --- Common header.
    /// <summary>Which event this line is.</summary>
    public EventKind Kind { get; set; }
    /// <summary>IRQ/softirq/need-resched bits of the flags column.</summary>
    public TraceContextFlags Context { get; set; }
    /// <summary>preempt_count &amp; 0xf at the event (4th flags character), excluding the tracepoint's own disable.</summary>
    public byte PreemptDepth { get; set; }
    /// <summary>Migrate-disable depth (5th flags character).</summary>
    public byte MigrateDisableDepth { get; set; }
    /// <summary>CPU that logged the event.</summary>
    public int Cpu { get; set; }
    /// <summary>Task (thread) id.</summary>
    public int Pid { get; set; }
    /// <summary>String id of the task's comm (as ftrace printed it, <c>&lt;...&gt;</c> when unknown).</summary>
    public int CommId { get; set; }
    /// <summary>Timestamp in microseconds (the <c>seconds.micros</c> column; finer digits are truncated).</summary>
    public long TimestampUs { get; set; }
    /// <summary>1-based line number in the trace file.</summary>
    public long Line { get; set; }

    // --- Slab.
    /// <summary>String id of call_site (<c>func+0x24/0x1f0</c> in 6.x, a hex address in older kernels).</summary>
    public int CallSiteId { get; set; }
    /// <summary>ptr= for slab events (hashed by %p, stable within one boot); page= for page events.</summary>
    public ulong Ptr { get; set; }
    /// <summary>bytes_req: what the caller asked for.</summary>
    public long BytesReq { get; set; }
    /// <summary>bytes_alloc: what the allocator really handed out (object size of the size class or cache).</summary>
    public long BytesAlloc { get; set; }
    /// <summary>gfp_flags, decoded.</summary>
    public Gfp Gfp { get; set; }
    /// <summary>String id of the gfp_flags text as printed (<c>GFP_KERNEL|__GFP_ZERO</c>); 0 when absent.</summary>
    public int GfpTextId { get; set; }
    /// <summary>node= (NUMA node requested, -1 for any) or nid= for vmscan events.</summary>
    public int Node { get; set; }
    /// <summary>accounted=: charged to a memory cgroup.</summary>
    public bool Accounted { get; set; }
    /// <summary>String id of the cache name (kmem_cache_alloc/free); 0 for kmalloc/kfree.</summary>
    public int CacheNameId { get; set; }

    // --- Pages.
    /// <summary>Page frame number (pfn=).</summary>
    public ulong Pfn { get; set; }
    /// <summary>order= (alloc_order= for extfrag).</summary>
    public int Order { get; set; }
    /// <summary>migratetype= (alloc_migratetype= for extfrag); see <see cref="Kmem.MigrateType"/>.</summary>
    public int MigrateType { get; set; }
    /// <summary>fallback_order= (mm_page_alloc_extfrag).</summary>
    public int FallbackOrder { get; set; }
    /// <summary>fallback_migratetype= (mm_page_alloc_extfrag).</summary>
    public int FallbackMigrateType { get; set; }
    /// <summary>percpu_refill= (mm_page_alloc_zone_locked): the block went to a per-CPU list.</summary>
    public bool PercpuRefill { get; set; }

    // --- vmalloc.
    /// <summary>va_start: the vmap area's start address.</summary>
    public ulong VaStart { get; set; }
    /// <summary>size= of the vmap area request.</summary>
    public ulong Size { get; set; }
    /// <summary>align= of the vmap area request.</summary>
    public ulong Align { get; set; }
    /// <summary>vstart= (alloc_vmap_area) or start= (purge_vmap_area_lazy).</summary>
    public ulong VStart { get; set; }
    /// <summary>vend= (alloc_vmap_area) or end= (purge_vmap_area_lazy).</summary>
    public ulong VEnd { get; set; }
    /// <summary>failed= (alloc_vmap_area).</summary>
    public bool Failed { get; set; }
    /// <summary>nr_lazy= (free_vmap_area_noflush): lazily freed pages outstanding.</summary>
    public ulong NrLazy { get; set; }
    /// <summary>nr_lazy_max= (free_vmap_area_noflush): the purge threshold.</summary>
    public ulong NrLazyMax { get; set; }
    /// <summary>num_purged= (purge_vmap_area_lazy).</summary>
    public uint NrPurged { get; set; }

    // --- vmscan / oom.
    /// <summary>nr_reclaimed= (mm_vmscan_direct_reclaim_end).</summary>
    public ulong NrReclaimed { get; set; }
    /// <summary>pid= of mark_victim (the OOM victim, not the task that logged the line).</summary>
    public int VictimPid { get; set; }

    // --- Context, decoded.
    /// <summary>Local interrupts were disabled.</summary>
    public readonly bool IrqsOff => (Context & TraceContextFlags.IrqsOff) != 0;
    /// <summary>Bottom halves were disabled.</summary>
    public readonly bool BhOff => (Context & TraceContextFlags.BhOff) != 0;
    /// <summary>Serving a softirq (and not a hardirq on top of it).</summary>
    public readonly bool InSoftirq => (Context & TraceContextFlags.Softirq) != 0;
    /// <summary>In a hardware interrupt handler.</summary>
    public readonly bool InHardirq => (Context & TraceContextFlags.Hardirq) != 0;
    /// <summary>In an NMI.</summary>
    public readonly bool InNmi => (Context & TraceContextFlags.Nmi) != 0;
    /// <summary>A reschedule was pending (any of the need-resched characters).</summary>
    public readonly bool NeedResched =>
        (Context & (TraceContextFlags.NeedResched | TraceContextFlags.NeedReschedLazy | TraceContextFlags.PreemptResched)) != 0;

    /// <summary>
    /// Linux's in_atomic() at the event, plus disabled IRQs/BHs: the code could not sleep. True in any interrupt
    /// context, with interrupts or bottom halves off, or with a non-zero preempt depth (spinlock held).
    /// </summary>
    public readonly bool IsAtomic
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => PreemptDepth != 0 || (Context & (TraceContextFlags.IrqsOff | TraceContextFlags.BhOff |
            TraceContextFlags.Softirq | TraceContextFlags.Hardirq | TraceContextFlags.Nmi)) != 0;
    }

    /// <summary>Timestamp in seconds, as ftrace prints it.</summary>
    public readonly double TimestampSeconds => TimestampUs / 1e6;
}
