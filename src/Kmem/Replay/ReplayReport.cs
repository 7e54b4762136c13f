using System.Globalization;
using System.Text;
using System.Text.Json;
using Kmem.PageAlloc;
using Kmem.Tracing;

namespace Kmem.Replay;

/// <summary>
/// What a replay found, captured at the end of the trace (before the live allocations are given back): events per
/// kind, live memory at peak and at the end by cache, size-class fidelity, slab efficiency, external fragmentation
/// per zone (buddyinfo and Linux's unusable free space index), failures, top call sites, outstanding allocations
/// by call site (bcc memleak's view) and the speed. Text for people, JSON for machines.
/// </summary>
public sealed class ReplayReport
{
    /// <summary>One row per event kind that occurred.</summary>
    public sealed record KindRow(string Event, long Seen, long Replayed, long Skipped, long Failures);

    /// <summary>One cache (a kmalloc size class of the trace, or a named cache).</summary>
    public sealed record CacheRow(string Name, long ObjectSize, long Allocs, long Frees, long PeakLive, long PeakLiveBytes, long LiveAtEnd, long LiveBytesAtEnd);

    /// <summary>One call site.</summary>
    public sealed record SiteRow(string CallSite, long Allocs, long Bytes, long LiveObjects, long LiveBytes);

    /// <summary>One zone's free lists at the end and its unusable free space index per order (0..1, 3 decimals as Linux).</summary>
    public sealed record ZoneRow(string Zone, long FreePages, long ManagedPages, long[] NrFree, double[] UnusableIndex);

    public string Trace { get; init; } = "";
    public ReplayMode Mode { get; init; }
    public string MachineText { get; init; } = "";
    public long Events { get; init; }
    public double Seconds { get; init; }
    /// <summary>Of <see cref="Seconds"/>' CPU time, the JIT compiling done meanwhile (any thread), in seconds.</summary>
    public double CompileSeconds { get; init; }
    public double EventsPerSecond => Seconds <= 0 ? 0 : Events / Seconds;
    public IReadOnlyList<KindRow> Kinds { get; init; } = [];
    public long KmallocChecked { get; init; }
    public long KmallocSizeClassMismatches { get; init; }
    public long CacheSizeMismatches { get; init; }
    public long AllocatorErrors { get; init; }
    public IReadOnlyList<string> AllocatorErrorSamples { get; init; } = [];
    public long AllocationFailures { get; init; }
    public long UnknownFrees { get; init; }
    public long NullFrees { get; init; }
    public long UnknownPageFrees { get; init; }
    public long UnknownVmapFrees { get; init; }
    public long LostFrees { get; init; }
    public long SlabPageAllocsSkipped { get; init; }
    public long KmallocLargePagesUndone { get; init; }
    public long AtomicEvents { get; init; }
    public long AtomicContextViolations { get; init; }
    public IReadOnlyList<string> AtomicContextViolationSamples { get; init; } = [];
    public long PeakLiveBytes { get; init; }
    public long PeakLiveObjects { get; init; }
    public long LiveObjectsAtEnd { get; init; }
    public long LiveObjectBytesAtEnd { get; init; }
    public long LivePageBlocksAtEnd { get; init; }
    public long LivePageBytesAtEnd { get; init; }
    public long LiveVmapsAtEnd { get; init; }
    public long LiveVmapBytesAtEnd { get; init; }
    /// <summary>Everything live at the end: objects + page blocks + vmalloc areas.</summary>
    public long LiveAtEnd => LiveObjectsAtEnd + LivePageBlocksAtEnd + LiveVmapsAtEnd;
    public IReadOnlyList<CacheRow> Caches { get; init; } = [];
    public IReadOnlyList<SlabUsage> Slabs { get; init; } = [];
    public IReadOnlyList<ZoneRow> Zones { get; init; } = [];
    public IReadOnlyList<SiteRow> TopSitesByBytes { get; init; } = [];
    public IReadOnlyList<SiteRow> TopSitesByCount { get; init; } = [];
    public IReadOnlyList<SiteRow> Outstanding { get; init; } = [];
    public long TraceLines { get; init; }
    public long TraceMalformed { get; init; }
    public long TraceLost { get; init; }

    /// <summary>
    /// Linux's unusable_free_index (mm/vmstat.c): the fraction of free memory that cannot satisfy an allocation of
    /// <paramref name="order"/>, (free_pages - suitable_blocks &lt;&lt; order) / free_pages, to 3 decimals (integer
    /// thousandths, as the kernel computes it); 1.000 when nothing is free.
    /// </summary>
    public static double UnusableFreeIndex(ReadOnlySpan<long> nrFree, int order)
    {
        long freePages = 0, suitable = 0;
        for (int o = 0; o < nrFree.Length; o++)
        {
            freePages += nrFree[o] << o;
            if (o >= order) suitable += nrFree[o] << (o - order);
        }
        if (freePages == 0) return 1.0;
        return (freePages - (suitable << order)) * 1000 / freePages / 1000.0;
    }

    /// <summary>Snapshot of an engine after its run (call before <see cref="ReplayEngine.FreeAllLive"/>).</summary>
    public static ReplayReport Capture(ReplayEngine e, string trace, FtraceReader? reader = null)
    {
        ArgumentNullException.ThrowIfNull(e);
        var kinds = new List<KindRow>();
        long failures = 0;
        for (int k = 1; k < EventKindExtensions.Count; k++)
        {
            var kind = (EventKind)k;
            failures += e.Failures(kind);
            if (e.Seen(kind) != 0)
                kinds.Add(new KindRow(kind.TraceName(), e.Seen(kind), e.Replayed(kind), e.Skipped(kind), e.Failures(kind)));
        }
        int top = e.Options.Top;
        var caches = e.Caches.Select(c => new CacheRow(c.Name, c.ObjectSize, c.Allocs, c.Frees, c.PeakLive, c.PeakLiveBytes, c.Live, c.LiveBytes))
            .OrderByDescending(c => c.PeakLiveBytes).ThenBy(c => c.Name, StringComparer.Ordinal).ToList();
        var sites = new List<SiteRow>();
        ReadOnlySpan<ReplayEngine.SiteStat> ss = e.Sites;
        for (int i = 0; i < ss.Length && i < e.Strings.Count; i++)
        {
            if (ss[i].Allocs != 0)
                sites.Add(new SiteRow(e.Strings[i].Length == 0 ? "(none)" : e.Strings[i], ss[i].Allocs, ss[i].Bytes, ss[i].LiveObjects, ss[i].LiveBytes));
        }
        var zones = new List<ZoneRow>();
        foreach (Zone z in e.Machine.Pages.Zones)
        {
            var nr = new long[Zone.NrOrders];
            for (int o = 0; o < nr.Length; o++) nr[o] = z.NrFree(o);
            var idx = new double[Zone.NrOrders];
            for (int o = 0; o < idx.Length; o++) idx[o] = UnusableFreeIndex(nr, o);
            zones.Add(new ZoneRow(z.Name, z.FreePages, z.ManagedPages, nr, idx));
        }
        var cfg = e.Machine.Config;
        return new ReplayReport
        {
            Trace = trace,
            Mode = e.Options.Mode,
            MachineText = $"{cfg.Profile.Name}, {e.Machine.TotalRamPages * ArchProfile.PageSize >> 20} MiB managed, {cfg.Cpus} CPUs",
            Events = e.Events,
            Seconds = e.Elapsed.TotalSeconds,
            CompileSeconds = e.CompileTime.TotalSeconds,
            Kinds = kinds,
            KmallocChecked = e.KmallocSizeClassChecked,
            KmallocSizeClassMismatches = e.KmallocSizeClassMismatches,
            CacheSizeMismatches = e.CacheSizeMismatches,
            AllocatorErrors = e.AllocatorErrors,
            AllocatorErrorSamples = e.AllocatorErrorSamples.ToList(),
            AllocationFailures = failures,
            UnknownFrees = e.UnknownFrees,
            NullFrees = e.NullFrees,
            UnknownPageFrees = e.UnknownPageFrees,
            UnknownVmapFrees = e.UnknownVmapFrees,
            LostFrees = e.LostFrees,
            SlabPageAllocsSkipped = e.SlabPageAllocs,
            KmallocLargePagesUndone = e.KmallocLargePageAllocs,
            AtomicEvents = e.AtomicEvents,
            AtomicContextViolations = e.AtomicContextViolations,
            AtomicContextViolationSamples = e.AtomicContextViolationSamples.ToList(),
            PeakLiveBytes = e.PeakLiveBytes,
            PeakLiveObjects = e.PeakLiveObjects,
            LiveObjectsAtEnd = e.LiveObjects,
            LiveObjectBytesAtEnd = e.LiveObjectBytes,
            LivePageBlocksAtEnd = e.LivePageBlocks,
            LivePageBytesAtEnd = e.LivePageBytes,
            LiveVmapsAtEnd = e.LiveVmaps,
            LiveVmapBytesAtEnd = e.LiveVmapBytes,
            Caches = caches,
            Slabs = e.Objects?.SlabUsage().Where(s => s.Slabs != 0).OrderByDescending(s => s.Slabs * s.PagesPerSlab).ToList() ?? [],
            Zones = zones,
            TopSitesByBytes = sites.OrderByDescending(s => s.Bytes).ThenBy(s => s.CallSite, StringComparer.Ordinal).Take(top).ToList(),
            TopSitesByCount = sites.OrderByDescending(s => s.Allocs).ThenBy(s => s.CallSite, StringComparer.Ordinal).Take(top).ToList(),
            Outstanding = sites.Where(s => s.LiveObjects != 0).OrderByDescending(s => s.LiveBytes).ThenBy(s => s.CallSite, StringComparer.Ordinal).Take(top).ToList(),
            TraceLines = reader?.Lines ?? 0,
            TraceMalformed = reader?.Malformed ?? 0,
            TraceLost = reader?.LostEvents ?? 0,
        };
    }

    // ------------------------------------------------------------------ text

    /// <summary>The report as readable tables.</summary>
    public string ToText()
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        void Line(string label, string value) => sb.Append(inv, $"  {label,-40} {value}\n");
        static string N(long v) => v.ToString("N0", CultureInfo.InvariantCulture);

        sb.Append(inv, $"REPLAY {Trace} (mode {Mode.ToString().ToLowerInvariant()}) on {MachineText}\n");
        Line("events", N(Events));
        Line("time", $"{Seconds.ToString("F3", inv)} s ({N((long)EventsPerSecond)} events/s, reading included)" +
            (CompileSeconds >= 0.0005 ? $"; JIT compiling meanwhile {(CompileSeconds * 1000).ToString("F0", inv)} ms" : ""));
        if (TraceMalformed + TraceLost > 0) Line("malformed lines / lost events", $"{N(TraceMalformed)} / {N(TraceLost)}");
        Line("atomic-context events", N(AtomicEvents));
        Line("atomic context violations", N(AtomicContextViolations));
        foreach (string s in AtomicContextViolationSamples) sb.Append("    ").Append(s).Append('\n');

        sb.Append(inv, $"\nEVENTS\n  {"event",-26} {"seen",10} {"replayed",10} {"skipped",10} {"failed",8}\n");
        foreach (KindRow k in Kinds)
            sb.Append(inv, $"  {k.Event,-26} {k.Seen,10:N0} {k.Replayed,10:N0} {k.Skipped,10:N0} {k.Failures,8:N0}\n");

        sb.Append("\nFIDELITY AND ERRORS\n");
        Line("kmalloc size-class mismatches", $"{N(KmallocSizeClassMismatches)} of {N(KmallocChecked)}");
        Line("cache object-size mismatches", N(CacheSizeMismatches));
        Line("allocator errors", N(AllocatorErrors));
        foreach (string s in AllocatorErrorSamples) sb.Append("    ").Append(s).Append('\n');
        Line("allocation failures", N(AllocationFailures));
        Line("frees of unknown objects (kfree(NULL))", $"{N(UnknownFrees)} ({N(NullFrees)})");
        Line("frees of unknown pages / vmap areas", $"{N(UnknownPageFrees)} / {N(UnknownVmapFrees)}");
        Line("allocations of a still-live pointer", N(LostFrees));
        Line("slab pages skipped / kmalloc_large undone", $"{N(SlabPageAllocsSkipped)} / {N(KmallocLargePagesUndone)}");

        sb.Append("\nLIVE MEMORY\n");
        Line("peak (bytes, objects then)", $"{N(PeakLiveBytes)} ({N(PeakLiveObjects)})");
        Line("at end: objects (bytes)", $"{N(LiveObjectsAtEnd)} ({N(LiveObjectBytesAtEnd)})");
        Line("at end: page blocks (bytes)", $"{N(LivePageBlocksAtEnd)} ({N(LivePageBytesAtEnd)})");
        Line("at end: vmalloc areas (bytes)", $"{N(LiveVmapsAtEnd)} ({N(LiveVmapBytesAtEnd)})");

        sb.Append(inv, $"\nCACHES (by peak live bytes)\n  {"allocs",10} {"frees",10} {"peak live",10} {"peak bytes",13} {"live end",9} {"bytes end",12}  name (object size)\n");
        foreach (CacheRow c in Caches.Take(Math.Max(20, TopSitesByBytes.Count)))
            sb.Append(inv, $"  {c.Allocs,10:N0} {c.Frees,10:N0} {c.PeakLive,10:N0} {c.PeakLiveBytes,13:N0} {c.LiveAtEnd,9:N0} {c.LiveBytesAtEnd,12:N0}  {c.Name} ({c.ObjectSize})\n");
        if (Caches.Count > 20) sb.Append(inv, $"  ... {Caches.Count - 20} more\n");

        if (Slabs.Count > 0)
        {
            sb.Append(inv, $"\nSLAB EFFICIENCY AT END (kmem's caches)\n  {"active",10} {"total",10} {"use %",6} {"slabs",7} {"pages",7}  name (size)\n");
            foreach (SlabUsage s in Slabs.Take(20))
                sb.Append(inv, $"  {s.ActiveObjects,10:N0} {s.TotalObjects,10:N0} {s.EfficiencyPercent,6:F1} {s.Slabs,7:N0} {s.Slabs * s.PagesPerSlab,7:N0}  {s.Name} ({s.ObjectSize})\n");
            if (Slabs.Count > 20) sb.Append(inv, $"  ... {Slabs.Count - 20} more\n");
        }

        sb.Append("\nFRAGMENTATION AT END (buddyinfo; unusable free space index per order, as /sys/kernel/debug/extfrag/unusable_index)\n");
        foreach (ZoneRow z in Zones)
        {
            sb.Append(inv, $"  {z.Zone,-7} free {N(z.FreePages)} of {N(z.ManagedPages)} pages\n    buddyinfo:");
            foreach (long n in z.NrFree) sb.Append(inv, $" {n,6}");
            sb.Append("\n    unusable: ");
            foreach (double d in z.UnusableIndex) sb.Append(inv, $" {d.ToString("F3", inv),6}");
            sb.Append('\n');
        }

        AppendSites(sb, "TOP CALL SITES BY BYTES", TopSitesByBytes);
        AppendSites(sb, "TOP CALL SITES BY COUNT", TopSitesByCount);
        AppendSites(sb, "OUTSTANDING AT END BY CALL SITE (memleak view)", Outstanding);
        return sb.ToString();
    }

    private static void AppendSites(StringBuilder sb, string title, IReadOnlyList<SiteRow> rows)
    {
        var inv = CultureInfo.InvariantCulture;
        sb.Append('\n').Append(title).Append('\n');
        sb.Append(inv, $"  {"allocs",10} {"bytes",14} {"live",9} {"live bytes",12}  call site\n");
        foreach (SiteRow r in rows)
            sb.Append(inv, $"  {r.Allocs,10:N0} {r.Bytes,14:N0} {r.LiveObjects,9:N0} {r.LiveBytes,12:N0}  {r.CallSite}\n");
    }

    // ------------------------------------------------------------------ JSON

    /// <summary>The report as an indented JSON object (snake_case keys).</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
            WriteJson(w);
        return Encoding.UTF8.GetString(stream.ToArray());
    }

    /// <summary>Writes the report as one JSON object.</summary>
    public void WriteJson(Utf8JsonWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.WriteStartObject();
        w.WriteString("trace", Trace);
        w.WriteString("mode", Mode.ToString().ToLowerInvariant());
        w.WriteString("machine", MachineText);
        w.WriteNumber("events", Events);
        w.WriteNumber("seconds", Math.Round(Seconds, 6));
        w.WriteNumber("compile_seconds", Math.Round(CompileSeconds, 6));
        w.WriteNumber("events_per_second", Math.Round(EventsPerSecond));
        w.WriteNumber("kmalloc_size_class_checked", KmallocChecked);
        w.WriteNumber("kmalloc_size_class_mismatches", KmallocSizeClassMismatches);
        w.WriteNumber("cache_size_mismatches", CacheSizeMismatches);
        w.WriteNumber("allocator_errors", AllocatorErrors);
        w.WriteStartArray("allocator_error_samples");
        foreach (string s in AllocatorErrorSamples) w.WriteStringValue(s);
        w.WriteEndArray();
        w.WriteNumber("allocation_failures", AllocationFailures);
        w.WriteNumber("unknown_frees", UnknownFrees);
        w.WriteNumber("null_frees", NullFrees);
        w.WriteNumber("unknown_page_frees", UnknownPageFrees);
        w.WriteNumber("unknown_vmap_frees", UnknownVmapFrees);
        w.WriteNumber("lost_frees", LostFrees);
        w.WriteNumber("slab_page_allocs_skipped", SlabPageAllocsSkipped);
        w.WriteNumber("kmalloc_large_pages_undone", KmallocLargePagesUndone);
        w.WriteNumber("atomic_events", AtomicEvents);
        w.WriteNumber("atomic_context_violations", AtomicContextViolations);
        w.WriteStartArray("atomic_context_violation_samples");
        foreach (string s in AtomicContextViolationSamples) w.WriteStringValue(s);
        w.WriteEndArray();
        w.WriteNumber("trace_lines", TraceLines);
        w.WriteNumber("trace_malformed", TraceMalformed);
        w.WriteNumber("trace_lost_events", TraceLost);
        w.WriteNumber("live_at_end", LiveAtEnd);
        w.WriteStartObject("live");
        w.WriteNumber("peak_bytes", PeakLiveBytes);
        w.WriteNumber("peak_objects", PeakLiveObjects);
        w.WriteNumber("objects_at_end", LiveObjectsAtEnd);
        w.WriteNumber("object_bytes_at_end", LiveObjectBytesAtEnd);
        w.WriteNumber("page_blocks_at_end", LivePageBlocksAtEnd);
        w.WriteNumber("page_bytes_at_end", LivePageBytesAtEnd);
        w.WriteNumber("vmaps_at_end", LiveVmapsAtEnd);
        w.WriteNumber("vmap_bytes_at_end", LiveVmapBytesAtEnd);
        w.WriteEndObject();
        w.WriteStartObject("events_by_type");
        foreach (KindRow k in Kinds)
        {
            w.WriteStartObject(k.Event);
            w.WriteNumber("seen", k.Seen);
            w.WriteNumber("replayed", k.Replayed);
            w.WriteNumber("skipped", k.Skipped);
            w.WriteNumber("failures", k.Failures);
            w.WriteEndObject();
        }
        w.WriteEndObject();
        w.WriteStartArray("caches");
        foreach (CacheRow c in Caches)
        {
            w.WriteStartObject();
            w.WriteString("name", c.Name);
            w.WriteNumber("object_size", c.ObjectSize);
            w.WriteNumber("allocs", c.Allocs);
            w.WriteNumber("frees", c.Frees);
            w.WriteNumber("peak_live", c.PeakLive);
            w.WriteNumber("peak_live_bytes", c.PeakLiveBytes);
            w.WriteNumber("live_at_end", c.LiveAtEnd);
            w.WriteNumber("live_bytes_at_end", c.LiveBytesAtEnd);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("slab_efficiency");
        foreach (SlabUsage s in Slabs)
        {
            w.WriteStartObject();
            w.WriteString("name", s.Name);
            w.WriteNumber("object_size", s.ObjectSize);
            w.WriteNumber("active_objs", s.ActiveObjects);
            w.WriteNumber("num_objs", s.TotalObjects);
            w.WriteNumber("num_slabs", s.Slabs);
            w.WriteNumber("pages", s.Slabs * s.PagesPerSlab);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("fragmentation");
        foreach (ZoneRow z in Zones)
        {
            w.WriteStartObject();
            w.WriteString("zone", z.Zone);
            w.WriteNumber("free_pages", z.FreePages);
            w.WriteNumber("managed_pages", z.ManagedPages);
            w.WriteStartArray("buddyinfo");
            foreach (long n in z.NrFree) w.WriteNumberValue(n);
            w.WriteEndArray();
            w.WriteStartArray("unusable_index");
            foreach (double d in z.UnusableIndex) w.WriteNumberValue(d);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
        WriteSites(w, "top_call_sites_by_bytes", TopSitesByBytes);
        WriteSites(w, "top_call_sites_by_count", TopSitesByCount);
        WriteSites(w, "outstanding_by_call_site", Outstanding);
        w.WriteEndObject();
    }

    private static void WriteSites(Utf8JsonWriter w, string name, IReadOnlyList<SiteRow> rows)
    {
        w.WriteStartArray(name);
        foreach (SiteRow r in rows)
        {
            w.WriteStartObject();
            w.WriteString("call_site", r.CallSite);
            w.WriteNumber("allocs", r.Allocs);
            w.WriteNumber("bytes", r.Bytes);
            w.WriteNumber("live", r.LiveObjects);
            w.WriteNumber("live_bytes", r.LiveBytes);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}
