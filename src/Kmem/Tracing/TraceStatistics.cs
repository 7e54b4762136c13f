using System.Globalization;
using System.Text;
using System.Text.Json;

namespace Kmem.Tracing;

/// <summary>
/// What <c>perf kmem stat</c> shows, over a stream of <see cref="TraceEvent"/>s: totals per event kind; slab
/// bytes requested vs allocated (internal fragmentation); cross-CPU frees; top call sites and caches; page
/// allocations by order, migratetype and GFP; allocations in atomic context; frees of objects the trace never
/// saw allocated (allocated before the window began) and objects still live at its end.
/// <para>Objects are matched by <c>ptr</c> (slab, hashed but stable within a boot) and pages by <c>pfn</c>.
/// Every freed page block appears as mm_page_free, and Linux 6.x logs batched frees as mm_page_free_batched
/// in addition, so page frees are counted from mm_page_free only. Memory grows with the live objects and the
/// distinct call sites/caches/GFP texts, not with trace length.</para>
/// </summary>
public sealed class TraceStatistics
{
    private readonly TraceStringTable _strings;
    private readonly long[] _kindCounts = new long[EventKindExtensions.Count];
    private readonly Dictionary<ulong, LiveObject> _liveObjects = [];
    private readonly Dictionary<ulong, LivePage> _livePages = [];
    private readonly Dictionary<int, SiteStats> _callSites = [];
    private readonly Dictionary<int, CacheStats> _caches = [];
    private readonly Dictionary<int, long> _pageAllocsByGfp = [];
    private readonly SortedDictionary<long, long> _kmallocBySize = [];
    private readonly long[] _pageAllocsByOrder = new long[MaxOrders];
    private readonly long[] _pageAllocsByMigrateType = new long[MigrateTypes];

    // Orders 0..10 are MAX_PAGE_ORDER (10 on x86-64); the last slot collects anything larger.
    private const int MaxOrders = 12;
    // MIGRATE_UNMOVABLE..MIGRATE_ISOLATE (5 types; MIGRATE_CMA is config-dependent); last slot: other.
    private const int MigrateTypes = 6;

    private readonly record struct LiveObject(int Cpu, long BytesAlloc, int CallSiteId);
    private readonly record struct LivePage(int Cpu, int Order);

    private sealed class SiteStats
    {
        public long Allocs, BytesReq, BytesAlloc;
    }

    private sealed class CacheStats
    {
        public long Allocs, Frees, BytesReq, BytesAlloc;
    }

    /// <summary>Statistics whose ids refer to <paramref name="strings"/> (the reader's <see cref="FtraceReader.Strings"/>).</summary>
    public TraceStatistics(TraceStringTable strings) => _strings = strings ?? throw new ArgumentNullException(nameof(strings));

    /// <summary>Reads a whole trace (lenient: malformed lines are counted, not fatal) and returns its statistics.</summary>
    public static TraceStatistics FromFile(string path, FtraceReaderOptions? options = null)
    {
        using var reader = new FtraceReader(path, options ?? FtraceReaderOptions.Lenient);
        return From(reader);
    }

    /// <summary>Reads the rest of <paramref name="reader"/> and returns its statistics, with the reader's line counters.</summary>
    public static TraceStatistics From(FtraceReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        var stats = new TraceStatistics(reader.Strings);
        while (reader.TryRead(out TraceEvent ev))
            stats.Add(ev);
        stats.Lines = reader.Lines;
        stats.SkippedLines = reader.Skipped;
        stats.MalformedLines = reader.Malformed;
        stats.LostEvents = reader.LostEvents;
        return stats;
    }

    /// <summary>Lines read (set by <see cref="FromFile"/>).</summary>
    public long Lines { get; set; }
    /// <summary>Lines of unrelated events (set by <see cref="FromFile"/>).</summary>
    public long SkippedLines { get; set; }
    /// <summary>Malformed lines (set by <see cref="FromFile"/>).</summary>
    public long MalformedLines { get; set; }
    /// <summary>Events the kernel reported lost (set by <see cref="FromFile"/>).</summary>
    public long LostEvents { get; set; }

    /// <summary>Events added.</summary>
    public long Events { get; private set; }
    /// <summary>kmalloc + kmem_cache_alloc events.</summary>
    public long SlabAllocs { get; private set; }
    /// <summary>kfree + kmem_cache_free events, including kfree(NULL).</summary>
    public long SlabFrees { get; private set; }
    /// <summary>kfree(NULL) calls.</summary>
    public long NullFrees { get; private set; }
    /// <summary>Sum of bytes_req over slab allocations.</summary>
    public long BytesRequested { get; private set; }
    /// <summary>Sum of bytes_alloc over slab allocations.</summary>
    public long BytesAllocated { get; private set; }
    /// <summary>Internal fragmentation of slab allocations: (allocated - requested) / allocated, in percent.</summary>
    public double FragmentationPercent => BytesAllocated == 0 ? 0 : 100.0 * (BytesAllocated - BytesRequested) / BytesAllocated;
    /// <summary>Slab frees on another CPU than the allocation.</summary>
    public long CrossCpuFrees { get; private set; }
    /// <summary>Slab frees of pointers the trace never saw allocated.</summary>
    public long UnknownFrees { get; private set; }
    /// <summary>Slab objects allocated in the trace and not freed by its end.</summary>
    public long LiveObjects => _liveObjects.Count;
    /// <summary>bytes_alloc of <see cref="LiveObjects"/>.</summary>
    public long LiveBytes { get; private set; }
    /// <summary>Allocations (slab and page) in atomic context (<see cref="TraceEvent.IsAtomic"/>).</summary>
    public long AtomicAllocs { get; private set; }
    /// <summary>Allocations in hardirq or NMI context.</summary>
    public long HardirqAllocs { get; private set; }
    /// <summary>Allocations in softirq context (not hardirq).</summary>
    public long SoftirqAllocs { get; private set; }
    /// <summary>Allocations with interrupts disabled.</summary>
    public long IrqsOffAllocs { get; private set; }
    /// <summary>Allocations in task context with only preemption disabled.</summary>
    public long PreemptOffAllocs { get; private set; }
    /// <summary>mm_page_alloc events.</summary>
    public long PageAllocs { get; private set; }
    /// <summary>Pages (4 KiB frames, 2^order each) allocated.</summary>
    public long PagesAllocated { get; private set; }
    /// <summary>mm_page_free events.</summary>
    public long PageFrees { get; private set; }
    /// <summary>Pages freed.</summary>
    public long PagesFreed { get; private set; }
    /// <summary>Page frees on another CPU than the allocation.</summary>
    public long PageCrossCpuFrees { get; private set; }
    /// <summary>Page frees of pfns the trace never saw allocated.</summary>
    public long UnknownPageFrees { get; private set; }
    /// <summary>Page blocks allocated and not freed by the end.</summary>
    public long LivePageBlocks => _livePages.Count;
    /// <summary>vmap areas allocated (alloc_vmap_area, not failed).</summary>
    public long VmapAllocs { get; private set; }
    /// <summary>Bytes of <see cref="VmapAllocs"/>.</summary>
    public long VmapBytes { get; private set; }
    /// <summary>alloc_vmap_area with failed=1.</summary>
    public long VmapFailures { get; private set; }
    /// <summary>vmap areas purged (sum of num_purged).</summary>
    public long VmapPurged { get; private set; }

    /// <summary>Events of one kind.</summary>
    public long Count(EventKind kind) => _kindCounts[(int)kind];

    /// <summary>Adds one event.</summary>
    public void Add(in TraceEvent ev)
    {
        Events++;
        _kindCounts[(int)ev.Kind]++;
        switch (ev.Kind)
        {
            case EventKind.Kmalloc:
            case EventKind.KmemCacheAlloc:
                AddSlabAlloc(ev);
                break;
            case EventKind.Kfree:
            case EventKind.KmemCacheFree:
                AddSlabFree(ev);
                break;
            case EventKind.MmPageAlloc:
                AddPageAlloc(ev);
                break;
            case EventKind.MmPageFree:
                PageFrees++;
                PagesFreed += 1L << Math.Min(ev.Order, 62);
                if (_livePages.Remove(ev.Pfn, out LivePage page))
                {
                    if (page.Cpu != ev.Cpu)
                        PageCrossCpuFrees++;
                }
                else
                {
                    UnknownPageFrees++;
                }
                break;
            case EventKind.AllocVmapArea:
                if (ev.Failed)
                {
                    VmapFailures++;
                }
                else
                {
                    VmapAllocs++;
                    VmapBytes += (long)ev.Size;
                }
                break;
            case EventKind.PurgeVmapAreaLazy:
                VmapPurged += ev.NrPurged;
                break;
        }
    }

    private void AddSlabAlloc(in TraceEvent ev)
    {
        SlabAllocs++;
        BytesRequested += ev.BytesReq;
        BytesAllocated += ev.BytesAlloc;
        CountContext(ev);
        if (_liveObjects.Remove(ev.Ptr, out LiveObject old))
            LiveBytes -= old.BytesAlloc; // re-allocation of a pointer whose free the trace missed
        _liveObjects[ev.Ptr] = new LiveObject(ev.Cpu, ev.BytesAlloc, ev.CallSiteId);
        LiveBytes += ev.BytesAlloc;

        if (!_callSites.TryGetValue(ev.CallSiteId, out SiteStats? site))
            _callSites[ev.CallSiteId] = site = new SiteStats();
        site.Allocs++;
        site.BytesReq += ev.BytesReq;
        site.BytesAlloc += ev.BytesAlloc;

        if (ev.Kind == EventKind.KmemCacheAlloc)
        {
            CacheStats cache = Cache(ev.CacheNameId);
            cache.Allocs++;
            cache.BytesReq += ev.BytesReq;
            cache.BytesAlloc += ev.BytesAlloc;
        }
        else
        {
            _kmallocBySize[ev.BytesAlloc] = _kmallocBySize.GetValueOrDefault(ev.BytesAlloc) + 1;
        }
    }

    private void AddSlabFree(in TraceEvent ev)
    {
        SlabFrees++;
        if (ev.Kind == EventKind.KmemCacheFree)
            Cache(ev.CacheNameId).Frees++;
        if (ev.Ptr == 0)
        {
            NullFrees++;
            return;
        }
        if (_liveObjects.Remove(ev.Ptr, out LiveObject obj))
        {
            LiveBytes -= obj.BytesAlloc;
            if (obj.Cpu != ev.Cpu)
                CrossCpuFrees++;
        }
        else
        {
            UnknownFrees++;
        }
    }

    private void AddPageAlloc(in TraceEvent ev)
    {
        PageAllocs++;
        PagesAllocated += 1L << Math.Min(ev.Order, 62);
        CountContext(ev);
        _pageAllocsByOrder[Math.Min(ev.Order, MaxOrders - 1)]++;
        _pageAllocsByMigrateType[(uint)ev.MigrateType < MigrateTypes - 1 ? ev.MigrateType : MigrateTypes - 1]++;
        _pageAllocsByGfp[ev.GfpTextId] = _pageAllocsByGfp.GetValueOrDefault(ev.GfpTextId) + 1;
        _livePages[ev.Pfn] = new LivePage(ev.Cpu, ev.Order);
    }

    private void CountContext(in TraceEvent ev)
    {
        if (!ev.IsAtomic)
            return;
        AtomicAllocs++;
        if (ev.InHardirq || ev.InNmi)
            HardirqAllocs++;
        else if (ev.InSoftirq)
            SoftirqAllocs++;
        else if (!ev.IrqsOff && !ev.BhOff)
            PreemptOffAllocs++;
        if (ev.IrqsOff)
            IrqsOffAllocs++;
    }

    private CacheStats Cache(int nameId)
    {
        if (!_caches.TryGetValue(nameId, out CacheStats? c))
            _caches[nameId] = c = new CacheStats();
        return c;
    }

    /// <summary>One row of a top-N table.</summary>
    /// <param name="Name">Call site or cache name.</param>
    /// <param name="Allocs">Allocations.</param>
    /// <param name="BytesReq">Bytes requested.</param>
    /// <param name="BytesAlloc">Bytes allocated.</param>
    /// <param name="Frees">Frees (caches only; 0 for call sites).</param>
    public readonly record struct TopRow(string Name, long Allocs, long BytesReq, long BytesAlloc, long Frees)
    {
        /// <summary>Internal fragmentation of this row, in percent.</summary>
        public double FragmentationPercent => BytesAlloc == 0 ? 0 : 100.0 * (BytesAlloc - BytesReq) / BytesAlloc;
    }

    /// <summary>Allocation call sites, most bytes allocated first.</summary>
    public IReadOnlyList<TopRow> TopCallSitesByBytes(int top) =>
        SiteRows().OrderByDescending(r => r.BytesAlloc).ThenBy(r => r.Name, StringComparer.Ordinal).Take(top).ToList();

    /// <summary>Allocation call sites, most allocations first.</summary>
    public IReadOnlyList<TopRow> TopCallSitesByCount(int top) =>
        SiteRows().OrderByDescending(r => r.Allocs).ThenBy(r => r.Name, StringComparer.Ordinal).Take(top).ToList();

    /// <summary>Caches (kmem_cache_alloc), most bytes allocated first.</summary>
    public IReadOnlyList<TopRow> TopCaches(int top) =>
        _caches.Select(kv => new TopRow(_strings[kv.Key], kv.Value.Allocs, kv.Value.BytesReq, kv.Value.BytesAlloc, kv.Value.Frees))
            .OrderByDescending(r => r.BytesAlloc).ThenBy(r => r.Name, StringComparer.Ordinal).Take(top).ToList();

    private IEnumerable<TopRow> SiteRows() =>
        _callSites.Select(kv => new TopRow(_strings[kv.Key], kv.Value.Allocs, kv.Value.BytesReq, kv.Value.BytesAlloc, 0));

    /// <summary>mm_page_alloc count per order (index = order; the last entry counts larger orders).</summary>
    public IReadOnlyList<long> PageAllocsByOrder => _pageAllocsByOrder;

    /// <summary>mm_page_alloc count per migratetype (index = <see cref="MigrateType"/>; the last entry counts others).</summary>
    public IReadOnlyList<long> PageAllocsByMigrateType => _pageAllocsByMigrateType;

    /// <summary>mm_page_alloc count per gfp_flags text, most frequent first.</summary>
    public IReadOnlyList<KeyValuePair<string, long>> PageAllocsByGfp =>
        _pageAllocsByGfp.OrderByDescending(kv => kv.Value).ThenBy(kv => _strings[kv.Key], StringComparer.Ordinal)
            .Select(kv => KeyValuePair.Create(_strings[kv.Key], kv.Value)).ToList();

    /// <summary>kmalloc count per bytes_alloc (the size classes Linux used), ascending size.</summary>
    public IReadOnlyList<KeyValuePair<long, long>> KmallocBySizeClass => _kmallocBySize.ToList();

    private static string MigrateTypeName(int i) => i < MigrateTypes - 1 ? ((MigrateType)i).ToString() : "Other";

    // ------------------------------------------------------------------ text

    /// <summary>A readable report, like <c>perf kmem stat</c>.</summary>
    public string ToText(int top = 10)
    {
        var sb = new StringBuilder();
        var inv = CultureInfo.InvariantCulture;
        void Line(string label, string value) => sb.Append(inv, $"  {label,-34} {value}\n");
        string N(long v) => v.ToString("N0", inv);

        sb.Append("SUMMARY\n");
        if (Lines > 0)
        {
            Line("lines", N(Lines));
            Line("skipped (other events)", N(SkippedLines));
            Line("malformed", N(MalformedLines));
            if (LostEvents > 0)
                Line("lost (kernel ring buffer)", N(LostEvents));
        }
        Line("events", N(Events));
        for (int k = 1; k < _kindCounts.Length; k++)
        {
            if (_kindCounts[k] != 0)
                Line("  " + ((EventKind)k).TraceName(), N(_kindCounts[k]));
        }

        sb.Append("\nSLAB\n");
        Line("allocations", N(SlabAllocs));
        Line("frees (of which kfree(NULL))", $"{N(SlabFrees)} ({N(NullFrees)})");
        Line("bytes requested", N(BytesRequested));
        Line("bytes allocated", N(BytesAllocated));
        Line("internal fragmentation", $"{FragmentationPercent.ToString("F2", inv)} %");
        Line("cross-CPU frees", $"{N(CrossCpuFrees)} ({Percent(CrossCpuFrees, SlabFrees - NullFrees - UnknownFrees)})");
        Line("frees of unseen objects", N(UnknownFrees));
        Line("live at end (objects / bytes)", $"{N(LiveObjects)} / {N(LiveBytes)}");
        Line("atomic-context allocations", $"{N(AtomicAllocs)} ({Percent(AtomicAllocs, SlabAllocs + PageAllocs)})");
        Line("  hardirq / softirq", $"{N(HardirqAllocs)} / {N(SoftirqAllocs)}");
        Line("  irqs off / preempt off only", $"{N(IrqsOffAllocs)} / {N(PreemptOffAllocs)}");

        AppendTop(sb, $"TOP {top} CALL SITES BY BYTES", TopCallSitesByBytes(top), withFrees: false);
        AppendTop(sb, $"TOP {top} CALL SITES BY COUNT", TopCallSitesByCount(top), withFrees: false);
        AppendTop(sb, $"TOP {top} CACHES", TopCaches(top), withFrees: true);

        sb.Append("\nPAGES\n");
        Line("allocations (pages)", $"{N(PageAllocs)} ({N(PagesAllocated)})");
        Line("frees (pages)", $"{N(PageFrees)} ({N(PagesFreed)})");
        Line("  of which batched", N(Count(EventKind.MmPageFreeBatched)));
        Line("cross-CPU frees", N(PageCrossCpuFrees));
        Line("frees of unseen pages", N(UnknownPageFrees));
        Line("live blocks at end", N(LivePageBlocks));
        sb.Append("  by order:      ");
        for (int o = 0; o < MaxOrders; o++)
        {
            if (_pageAllocsByOrder[o] != 0)
                sb.Append(inv, $" {(o == MaxOrders - 1 ? ">" + (o - 1) : o.ToString(inv))}:{N(_pageAllocsByOrder[o])}");
        }
        sb.Append("\n  by migratetype:");
        for (int m = 0; m < MigrateTypes; m++)
        {
            if (_pageAllocsByMigrateType[m] != 0)
                sb.Append(inv, $" {MigrateTypeName(m)}:{N(_pageAllocsByMigrateType[m])}");
        }
        sb.Append('\n');
        sb.Append("  by gfp_flags:\n");
        foreach (var (gfp, count) in PageAllocsByGfp.Take(top))
            sb.Append(inv, $"    {count,12:N0}  {gfp}\n");

        if (VmapAllocs + VmapFailures + Count(EventKind.FreeVmapAreaNoflush) != 0)
        {
            sb.Append("\nVMALLOC\n");
            Line("vmap areas allocated (bytes)", $"{N(VmapAllocs)} ({N(VmapBytes)})");
            Line("failed", N(VmapFailures));
            Line("lazily freed", N(Count(EventKind.FreeVmapAreaNoflush)));
            Line("purges (areas purged)", $"{N(Count(EventKind.PurgeVmapAreaLazy))} ({N(VmapPurged)})");
        }
        return sb.ToString();
    }

    private static string Percent(long part, long whole) =>
        whole <= 0 ? "-" : (100.0 * part / whole).ToString("F1", CultureInfo.InvariantCulture) + " %";

    private static void AppendTop(StringBuilder sb, string title, IReadOnlyList<TopRow> rows, bool withFrees)
    {
        var inv = CultureInfo.InvariantCulture;
        sb.Append('\n').Append(title).Append('\n');
        sb.Append(inv, $"  {"allocs",10} {(withFrees ? "frees" : ""),10} {"bytes req",14} {"bytes alloc",14} {"frag %",7}  name\n");
        foreach (TopRow r in rows)
        {
            string frees = withFrees ? r.Frees.ToString("N0", inv) : "";
            sb.Append(inv, $"  {r.Allocs,10:N0} {frees,10} {r.BytesReq,14:N0} {r.BytesAlloc,14:N0} {r.FragmentationPercent,7:F2}  {r.Name}\n");
        }
    }

    // ------------------------------------------------------------------ JSON

    /// <summary>The statistics as an indented JSON document.</summary>
    public string ToJson(int top = 10)
    {
        using var stream = new MemoryStream();
        using (var writer = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
            WriteJson(writer, top);
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Writes the statistics as one JSON object.</summary>
    public void WriteJson(Utf8JsonWriter w, int top = 10)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.WriteStartObject();
        w.WriteNumber("lines", Lines);
        w.WriteNumber("skippedLines", SkippedLines);
        w.WriteNumber("malformedLines", MalformedLines);
        w.WriteNumber("lostEvents", LostEvents);
        w.WriteNumber("events", Events);
        w.WriteStartObject("eventsByKind");
        for (int k = 1; k < _kindCounts.Length; k++)
            w.WriteNumber(((EventKind)k).TraceName(), _kindCounts[k]);
        w.WriteEndObject();

        w.WriteStartObject("slab");
        w.WriteNumber("allocs", SlabAllocs);
        w.WriteNumber("frees", SlabFrees);
        w.WriteNumber("nullFrees", NullFrees);
        w.WriteNumber("bytesRequested", BytesRequested);
        w.WriteNumber("bytesAllocated", BytesAllocated);
        w.WriteNumber("fragmentationPercent", Math.Round(FragmentationPercent, 4));
        w.WriteNumber("crossCpuFrees", CrossCpuFrees);
        w.WriteNumber("unknownFrees", UnknownFrees);
        w.WriteNumber("liveObjects", LiveObjects);
        w.WriteNumber("liveBytes", LiveBytes);
        w.WriteStartObject("kmallocBySizeClass");
        foreach (var (size, count) in _kmallocBySize)
            w.WriteNumber(size.ToString(CultureInfo.InvariantCulture), count);
        w.WriteEndObject();
        w.WriteEndObject();

        w.WriteStartObject("atomic");
        w.WriteNumber("allocs", AtomicAllocs);
        w.WriteNumber("hardirq", HardirqAllocs);
        w.WriteNumber("softirq", SoftirqAllocs);
        w.WriteNumber("irqsOff", IrqsOffAllocs);
        w.WriteNumber("preemptOffOnly", PreemptOffAllocs);
        w.WriteEndObject();

        WriteRows(w, "topCallSitesByBytes", TopCallSitesByBytes(top), withFrees: false);
        WriteRows(w, "topCallSitesByCount", TopCallSitesByCount(top), withFrees: false);
        WriteRows(w, "topCaches", TopCaches(top), withFrees: true);

        w.WriteStartObject("pages");
        w.WriteNumber("allocs", PageAllocs);
        w.WriteNumber("pagesAllocated", PagesAllocated);
        w.WriteNumber("frees", PageFrees);
        w.WriteNumber("pagesFreed", PagesFreed);
        w.WriteNumber("batchedFrees", Count(EventKind.MmPageFreeBatched));
        w.WriteNumber("crossCpuFrees", PageCrossCpuFrees);
        w.WriteNumber("unknownFrees", UnknownPageFrees);
        w.WriteNumber("liveBlocks", LivePageBlocks);
        w.WriteStartArray("byOrder");
        foreach (long c in _pageAllocsByOrder)
            w.WriteNumberValue(c);
        w.WriteEndArray();
        w.WriteStartObject("byMigrateType");
        for (int m = 0; m < MigrateTypes; m++)
            w.WriteNumber(MigrateTypeName(m), _pageAllocsByMigrateType[m]);
        w.WriteEndObject();
        w.WriteStartObject("byGfp");
        foreach (var (gfp, count) in PageAllocsByGfp)
            w.WriteNumber(gfp.Length == 0 ? "(none)" : gfp, count);
        w.WriteEndObject();
        w.WriteEndObject();

        w.WriteStartObject("vmalloc");
        w.WriteNumber("allocs", VmapAllocs);
        w.WriteNumber("bytes", VmapBytes);
        w.WriteNumber("failed", VmapFailures);
        w.WriteNumber("lazyFrees", Count(EventKind.FreeVmapAreaNoflush));
        w.WriteNumber("purges", Count(EventKind.PurgeVmapAreaLazy));
        w.WriteNumber("purged", VmapPurged);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    private static void WriteRows(Utf8JsonWriter w, string name, IReadOnlyList<TopRow> rows, bool withFrees)
    {
        w.WriteStartArray(name);
        foreach (TopRow r in rows)
        {
            w.WriteStartObject();
            w.WriteString("name", r.Name);
            w.WriteNumber("allocs", r.Allocs);
            if (withFrees)
                w.WriteNumber("frees", r.Frees);
            w.WriteNumber("bytesReq", r.BytesReq);
            w.WriteNumber("bytesAlloc", r.BytesAlloc);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}
