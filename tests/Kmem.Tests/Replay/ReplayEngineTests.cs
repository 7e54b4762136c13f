using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Kmem.Replay;
using Kmem.Tracing;

namespace Kmem.Tests.Replay;

/// <summary>A stand-in for kmem's slab/vmalloc with Linux's kmalloc size classes, over native memory.</summary>
internal sealed unsafe class FakeObjects : IReplayObjects, IDisposable
{
    private readonly Dictionary<nint, long> _sizes = [];
    public readonly List<(string Name, int Size)> Created = [];
    public readonly List<string> Calls = [];

    public static long SizeClass(long size) => size switch
    {
        <= 8 => 8, <= 16 => 16, <= 32 => 32, <= 64 => 64, <= 96 => 96, <= 128 => 128, <= 192 => 192,
        <= 8192 => (long)System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)size),
        _ => 4096L << Kmem.PageAlloc.PageAllocator.GetOrder(size),
    };

    /// <summary>Context.Describe() and irqs_disabled() at each call, in order.</summary>
    public readonly List<string> Contexts = [];

    private nint New(long size, string what)
    {
        Contexts.Add($"{Kmem.Context.Describe()}{(Kmem.Context.IrqsDisabled ? " irqs-off" : "")} {Kmem.Context.PreemptCount:x}");
        nint p = (nint)NativeMemory.Alloc((nuint)size);
        _sizes[p] = size;
        Calls.Add(what);
        return p;
    }

    private void Free(nint p, string what)
    {
        if (!_sizes.Remove(p)) throw new KmemTestException($"{what} of unknown {p:x}");
        NativeMemory.Free((void*)p);
        Calls.Add(what);
    }

    public nint Kmalloc(long size, Kmem.Gfp gfp) => New(SizeClass(size), $"kmalloc {size}");
    public long Ksize(nint p) => _sizes[p];
    public void Kfree(nint p) => Free(p, "kfree");
    public int CreateCache(string name, int objectSize) { Created.Add((name, objectSize)); return Created.Count - 1; }
    public int CacheSlotSize(int cache) => Created[cache].Size;
    public nint CacheAlloc(int cache, Kmem.Gfp gfp) => New(Created[cache].Size, $"cache_alloc {Created[cache].Name}");
    public void CacheFree(int cache, nint p) => Free(p, $"cache_free {Created[cache].Name}");
    public bool HasVmalloc => true;
    public nint Vmalloc(long size, Kmem.Gfp gfp) => New(size, $"vmalloc {size}");
    public void Vfree(nint p) => Free(p, "vfree");
    public IReadOnlyList<SlabUsage> SlabUsage() => [];
    public int Live => _sizes.Count;

    public void Dispose()
    {
        foreach (nint p in _sizes.Keys) NativeMemory.Free((void*)p);
        _sizes.Clear();
    }
}

internal sealed class KmemTestException(string m) : KmemException(m);

public sealed class ReplayEngineTests
{
    private const string H = " bash-100 [000] ..... 10.000001: ";
    private const string H1 = " bash-100 [001] ..... 10.000001: ";

    private static FtraceReader Reader(string text) =>
        new(new MemoryStream(Encoding.ASCII.GetBytes(text)), "t.trace", TraceCompression.None);

    internal static (ReplayEngine Engine, ReplayReport Report) Run(Machine m, IReplayObjects? objects, string text, ReplayMode mode = ReplayMode.Objects) =>
        Replay(m, objects, text, mode);

    private static (ReplayEngine Engine, ReplayReport Report) Replay(Machine m, IReplayObjects? objects, string text, ReplayMode mode = ReplayMode.Objects)
    {
        var e = new ReplayEngine(m, objects, new ReplayOptions { Mode = mode, InitialTableCapacity = 16 });
        using var r = Reader(text);
        e.Run(r);
        return (e, ReplayReport.Capture(e, "t.trace", r));
    }

    [Fact]
    public void Page_events_map_pfns_to_our_pages_and_everything_returns()
    {
        using var m = Machine.Boot();
        long free0 = m.FreePages;
        string t =
            H + "mm_page_alloc: page=00000000aaaaaaaa pfn=0x1000 order=2 migratetype=0 gfp_flags=GFP_KERNEL\n" +
            H + "mm_page_alloc: page=00000000bbbbbbbb pfn=0x2000 order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP\n" +
            H1 + "mm_page_free: page=00000000aaaaaaaa pfn=0x1000 order=2\n" +
            H1 + "mm_page_free_batched: page=00000000aaaaaaaa pfn=0x1000 order=0\n" +
            H + "mm_page_free: page=00000000cccccccc pfn=0x3000 order=0\n";
        var (e, rep) = Replay(m, null, t, ReplayMode.Pages);
        Assert.Equal(5, rep.Events);
        Assert.Equal(2, e.Replayed(EventKind.MmPageAlloc));
        Assert.Equal(1, e.Replayed(EventKind.MmPageFree));
        Assert.Equal(1, rep.UnknownPageFrees);
        Assert.Equal(1, rep.LivePageBlocksAtEnd);
        Assert.Equal(4096, rep.LivePageBytesAtEnd);
        Assert.Equal(5 * 4096, rep.PeakLiveBytes);
        Assert.Equal(0, rep.AllocatorErrors);
        Assert.Equal(1, e.FreeAllLive());
        m.Pages.DrainAllPages();
        Assert.Equal(free0, m.FreePages);
        Assert.Null(m.Pages.CheckInvariants());
    }

    [Fact]
    public void Objects_replay_kmalloc_caches_and_vmalloc_with_fidelity_and_window_edges()
    {
        using var m = Machine.Boot();
        using var objects = new FakeObjects();
        string t =
            H + "kmalloc: call_site=foo+0x1/0x10 ptr=0000000000000001 bytes_req=24 bytes_alloc=32 gfp_flags=GFP_KERNEL node=-1 accounted=false\n" +
            H + "kmalloc: call_site=foo+0x1/0x10 ptr=0000000000000002 bytes_req=100 bytes_alloc=128 gfp_flags=GFP_KERNEL node=-1 accounted=false\n" +
            H + "kmem_cache_alloc: call_site=bar+0x2/0x20 ptr=0000000000000003 name=filp bytes_req=232 bytes_alloc=256 gfp_flags=GFP_KERNEL node=-1 accounted=true\n" +
            H + "kmem_cache_alloc: call_site=bar+0x2/0x20 ptr=0000000000000004 name=filp bytes_req=232 bytes_alloc=256 gfp_flags=GFP_KERNEL node=-1 accounted=true\n" +
            H + "kfree: call_site=baz+0x3/0x30 ptr=0000000000000001\n" +
            H + "kfree: call_site=baz+0x3/0x30 ptr=0000000000000000\n" +
            H + "kfree: call_site=baz+0x3/0x30 ptr=00000000000000ff\n" +
            H + "kmem_cache_free: call_site=qux+0x4/0x40 ptr=0000000000000003 name=filp\n" +
            H + "kmalloc: call_site=foo+0x1/0x10 ptr=0000000000000002 bytes_req=8 bytes_alloc=8 gfp_flags=GFP_ATOMIC node=-1 accounted=false\n" +
            H + "alloc_vmap_area: va_start=18446683600570097664 size=20480 align=4096 vstart=18446683600570023936 vend=18446744004133699583 failed=0\n" +
            H + "free_vmap_area_noflush: va_start=18446683600570097664 nr_lazy=4 nr_lazy_max=32768\n";
        var (e, rep) = Replay(m, objects, t);
        Assert.Equal(0, rep.AllocatorErrors);
        Assert.Equal(3, rep.KmallocChecked);
        Assert.Equal(0, rep.KmallocSizeClassMismatches);
        Assert.Equal([("filp", 256)], objects.Created);
        Assert.Equal(1, rep.UnknownFrees);
        Assert.Equal(1, rep.NullFrees);
        Assert.Equal(1, rep.LostFrees); // ptr 2 allocated again without a free
        Assert.Equal(2, rep.LiveObjectsAtEnd); // ptr 2 (8 bytes), ptr 4 (filp)
        Assert.Equal(8 + 256, rep.LiveObjectBytesAtEnd);
        Assert.Contains("vmalloc 16384", objects.Calls); // the guard page is not allocated
        Assert.Equal(0, rep.LiveVmapsAtEnd);
        Assert.Equal(1, rep.Outstanding.Single(s => s.CallSite == "foo+0x1/0x10").LiveObjects);
        Assert.Equal(1, rep.Outstanding.Single(s => s.CallSite == "bar+0x2/0x20").LiveObjects);
        var filp = rep.Caches.Single(c => c.Name == "filp");
        Assert.Equal((2, 1, 2, 512), (filp.Allocs, filp.Frees, filp.PeakLive, filp.PeakLiveBytes));
        e.FreeAllLive();
        Assert.Equal(0, objects.Live);
    }

    [Fact]
    public void Objects_mode_skips_slab_pages_and_kmalloc_large_pages_with_their_frees()
    {
        using var m = Machine.Boot();
        long free0 = m.FreePages;
        using var objects = new FakeObjects();
        string t =
            // A slab page (allocate_slab's first attempt) and its free.
            H + "mm_page_alloc: page=00000000aaaaaaaa pfn=0x1000 order=1 migratetype=0 gfp_flags=GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP\n" +
            // kmalloc_large: the compound page, then the kmalloc on the same CPU.
            H1 + "mm_page_alloc: page=00000000bbbbbbbb pfn=0x2000 order=2 migratetype=0 gfp_flags=GFP_KERNEL|__GFP_COMP\n" +
            H + "kmem_cache_free: call_site=qux+0x4/0x40 ptr=0000000000000009 name=filp\n" +
            H1 + "kmalloc: call_site=big+0x1/0x10 ptr=0000000000000005 bytes_req=16000 bytes_alloc=16384 gfp_flags=GFP_KERNEL node=-1 accounted=false\n" +
            // A page-cache page: replayed.
            H + "mm_page_alloc: page=00000000cccccccc pfn=0x3000 order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP\n" +
            H1 + "kfree: call_site=big+0x2/0x10 ptr=0000000000000005\n" +
            H1 + "mm_page_free: page=00000000bbbbbbbb pfn=0x2000 order=2\n" +
            H + "mm_page_free: page=00000000aaaaaaaa pfn=0x1000 order=1\n";
        var (e, rep) = Replay(m, objects, t);
        Assert.Equal(0, rep.AllocatorErrors);
        Assert.Equal(1, rep.SlabPageAllocsSkipped);
        Assert.Equal(1, rep.KmallocLargePagesUndone);
        Assert.Equal(0, rep.KmallocSizeClassMismatches);
        Assert.Equal(1, e.Replayed(EventKind.MmPageAlloc));
        Assert.Equal(0, rep.UnknownPageFrees);
        Assert.Equal(1, rep.LivePageBlocksAtEnd);
        e.FreeAllLive();
        m.Pages.DrainAllPages();
        Assert.Equal(free0, m.FreePages);

        // The same trace in pages mode replays all three page allocations and none of the objects.
        using var m2 = Machine.Boot();
        var (e2, rep2) = Replay(m2, objects, t, ReplayMode.Pages);
        Assert.Equal(3, e2.Replayed(EventKind.MmPageAlloc));
        Assert.Equal(2, e2.Replayed(EventKind.MmPageFree));
        Assert.Equal(0, e2.Replayed(EventKind.Kmalloc));
        Assert.Equal(0, rep2.AllocatorErrors);
    }

    [Theory]
    [InlineData("GFP_KERNEL|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", true)]
    [InlineData("GFP_NOWAIT|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC", true)]
    [InlineData("__GFP_RECLAIMABLE|__GFP_IO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC", true)]
    [InlineData("GFP_ATOMIC|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", true)]
    [InlineData("GFP_NOFS|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", true)]
    [InlineData("GFP_NOWAIT|__GFP_NORETRY|__GFP_COMP|__GFP_THISNODE", true)]
    [InlineData("GFP_NOFS|__GFP_HIGHMEM|__GFP_MOVABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_HARDWALL", false)] // readahead
    [InlineData("GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP", false)]               // large folio
    [InlineData("GFP_KERNEL_ACCOUNT|__GFP_ZERO|__GFP_COMP", false)]                                             // page table
    [InlineData("GFP_KERNEL|__GFP_COMP", false)]                                                                // kmalloc_large
    [InlineData("GFP_NOWAIT", false)]
    public void Slab_page_gfp_predicate(string gfpText, bool slab)
    {
        string line = H + $"mm_page_alloc: page=00000000aaaaaaaa pfn=0x1000 order=0 migratetype=0 gfp_flags={gfpText}\n";
        using var r = Reader(line);
        Assert.True(r.TryRead(out TraceEvent ev));
        Assert.Equal(slab, ReplayEngine.IsSlabPageGfp(ev.Gfp));
    }

    [Fact]
    public void Unusable_free_index_matches_vmstat()
    {
        // 4 order-0 blocks and 1 order-2 block: 8 free pages.
        long[] nr = [4, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        Assert.Equal(0.0, ReplayReport.UnusableFreeIndex(nr, 0));
        Assert.Equal(0.5, ReplayReport.UnusableFreeIndex(nr, 1));  // (8 - 2*2) / 8
        Assert.Equal(0.5, ReplayReport.UnusableFreeIndex(nr, 2));  // (8 - 1*4) / 8
        Assert.Equal(1.0, ReplayReport.UnusableFreeIndex(nr, 3));
        Assert.Equal(1.0, ReplayReport.UnusableFreeIndex(new long[11], 0));
        long[] thirds = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];       // 3 pages: index(1) = 1/3 → 0.333 (thousandths, truncated)
        Assert.Equal(0.333, ReplayReport.UnusableFreeIndex(thirds, 1));
    }

    [Fact]
    public void Real_traces_replay_in_pages_mode_without_errors_or_failures()
    {
        foreach (string name in new[] { "fs.trace.zst", "forkexec.trace.zst" })
        {
            string path = TestData.TracePath(name);
            long ram = ReplaySizing.RamFor(ReplaySizing.PeakLiveBytes(path, ReplayMode.Pages));
            using var m = Machine.Boot(new MachineConfig { RamBytes = ram });
            var e = new ReplayEngine(m, null, new ReplayOptions { Mode = ReplayMode.Pages });
            using (var r = new FtraceReader(path)) e.Run(r);
            var rep = ReplayReport.Capture(e, name);
            Assert.Equal(0, rep.AllocatorErrors);
            Assert.Equal(0, rep.AllocationFailures);
            Assert.Equal(rep.Kinds.Single(k => k.Event == "mm_page_alloc").Seen, e.Replayed(EventKind.MmPageAlloc));
            using var doc = JsonDocument.Parse(rep.ToJson());
            foreach (string key in new[] { "events", "events_per_second", "kmalloc_size_class_mismatches", "allocator_errors", "unknown_frees", "live_at_end" })
                Assert.True(doc.RootElement.TryGetProperty(key, out _), key);
            e.FreeAllLive();
            Assert.Null(m.Pages.CheckInvariants());
        }
    }
}

public sealed class RealTraceReplayTests
{
    // The issue's "Done": both real traces replay through kmem's slab and page allocators with zero size-class
    // mismatches, zero allocator errors and a full report. The machine is sized from the trace as the CLI does.
    [Theory]
    [InlineData("fs.trace.zst")]
    [InlineData("forkexec.trace.zst")]
    public void Real_trace_replays_objects_with_zero_mismatches_and_errors(string name)
    {
        string path = TestData.TracePath(name);
        long ram = ReplaySizing.RamFor(ReplaySizing.PeakLiveBytes(path, ReplayMode.Objects));
        using var m = Machine.Boot(new MachineConfig { RamBytes = ram });
        var e = new ReplayEngine(m, new MachineObjects(m));
        ReplayReport rep;
        using (var r = new FtraceReader(path))
        {
            e.Run(r);
            rep = ReplayReport.Capture(e, name, r);
        }
        Assert.Equal(0, rep.KmallocSizeClassMismatches);
        Assert.Equal(0, rep.CacheSizeMismatches);
        Assert.Equal(0, rep.AllocatorErrors);
        Assert.Equal(0, rep.AllocationFailures);
        var stat = TraceStatistics.FromFile(path);
        Assert.Equal(stat.Count(EventKind.Kmalloc), rep.KmallocChecked);
        Assert.Equal(stat.UnknownFrees, rep.UnknownFrees);
        Assert.Equal(stat.LiveObjects, rep.LiveObjectsAtEnd);
        // vmalloc: every alloc_vmap_area replays through machine.Vmalloc (aligned, without its guard page); frees
        // map va_start (decimal in alloc_vmap_area, hex in free_vmap_area_noflush) back to our areas.
        Assert.True(e.Seen(EventKind.AllocVmapArea) > 0);
        Assert.Equal(e.Seen(EventKind.AllocVmapArea), e.Replayed(EventKind.AllocVmapArea));
        Assert.Equal(e.Seen(EventKind.FreeVmapAreaNoflush), e.Replayed(EventKind.FreeVmapAreaNoflush) + rep.UnknownVmapFrees);
        Assert.True(rep.UnknownVmapFrees <= 1, $"{rep.UnknownVmapFrees} unknown vmap frees");
        Assert.Equal(e.LiveVmaps, m.Vmalloc.BusyAreas);
        Assert.NotEmpty(rep.Slabs);
        Assert.NotEmpty(rep.Caches);
        Assert.NotEmpty(rep.TopSitesByBytes);
        Assert.NotEmpty(rep.Outstanding);
        Assert.All(rep.Zones, z => Assert.Equal(Kmem.PageAlloc.Zone.NrOrders, z.UnusableIndex.Length));
        string text = rep.ToText();
        foreach (string section in new[] { "EVENTS", "FIDELITY", "LIVE MEMORY", "CACHES", "SLAB EFFICIENCY", "FRAGMENTATION", "TOP CALL SITES BY BYTES", "TOP CALL SITES BY COUNT", "OUTSTANDING" })
            Assert.Contains(section, text);
        e.FreeAllLive();
        Assert.Equal(0, e.AllocatorErrors);
        Assert.Equal(0, m.Vmalloc.BusyAreas);
        Assert.Null(m.Vmalloc.CheckInvariants());
        Assert.Null(m.Pages.CheckInvariants());
    }

    // The flags column decides the context each call runs in; GFP_KERNEL where the kernel could not sleep is a
    // violation, counted and replayed in process context, never a crash; the common '.....' costs nothing.
    [Fact]
    public void Atomic_flags_run_calls_in_that_context_and_count_violations()
    {
        using var m = Machine.Boot();
        using var objects = new FakeObjects();
        string t =
            " bash-100 [000] d.h1. 10.000001: kmalloc: call_site=a+0x1/0x10 ptr=0000000000000001 bytes_req=8 bytes_alloc=8 gfp_flags=GFP_ATOMIC node=-1 accounted=false\n" +
            " bash-100 [000] ..s.. 10.000002: kmalloc: call_site=a+0x1/0x10 ptr=0000000000000002 bytes_req=8 bytes_alloc=8 gfp_flags=GFP_ATOMIC node=-1 accounted=false\n" +
            " bash-100 [000] d..1. 10.000003: kmalloc: call_site=a+0x1/0x10 ptr=0000000000000003 bytes_req=8 bytes_alloc=8 gfp_flags=GFP_NOWAIT node=-1 accounted=false\n" +
            " bash-100 [000] ...2. 10.000004: kmalloc: call_site=a+0x1/0x10 ptr=0000000000000004 bytes_req=8 bytes_alloc=8 gfp_flags=GFP_KERNEL node=-1 accounted=false\n" +
            " bash-100 [000] .N... 10.000005: kmalloc: call_site=a+0x1/0x10 ptr=0000000000000005 bytes_req=8 bytes_alloc=8 gfp_flags=GFP_KERNEL node=-1 accounted=false\n";
        var (e, rep) = ReplayEngineTests.Run(m, objects, t);
        Assert.Equal(0, rep.AllocatorErrors);
        Assert.Equal(5, e.Replayed(EventKind.Kmalloc));
        Assert.Equal(4, rep.AtomicEvents);
        Assert.Equal(1, rep.AtomicContextViolations);
        Assert.Contains("line 4", Assert.Single(rep.AtomicContextViolationSamples));
        Assert.Equal(["hardirq irqs-off 10001", "softirq 100", "atomic irqs-off 1", "task 0", "task 0"], objects.Contexts);
        Assert.True(Kmem.Context.Preemptible); // restored after every event
        Assert.Contains("\"atomic_context_violations\":1", rep.ToJson().Replace(" ", ""));
        e.FreeAllLive();
    }

    // Through kmem's real allocators: GFP_ATOMIC in hardirq context works, and kmem's might_sleep refusals (a vfree
    // under a spinlock) become violations, not allocator errors.
    [Fact]
    public void Atomic_replay_through_machine_objects_has_no_errors()
    {
        using var m = Machine.Boot();
        string t =
            " bash-100 [000] d.h1. 10.000001: kmalloc: call_site=a+0x1/0x10 ptr=0000000000000001 bytes_req=100 bytes_alloc=128 gfp_flags=GFP_ATOMIC node=-1 accounted=false\n" +
            " bash-100 [000] ..... 10.000002: alloc_vmap_area: va_start=18446683600570097664 size=20480 align=16384 vstart=18446683600570023936 vend=18446744004133699583 failed=0\n" +
            " bash-100 [000] ...1. 10.000003: free_vmap_area_noflush: va_start=0xffffc90000000000 nr_lazy=4 nr_lazy_max=32768\n" +
            " bash-100 [000] ...1. 10.000004: free_vmap_area_noflush: va_start=0xffffc90000012000 nr_lazy=4 nr_lazy_max=32768\n" +
            " bash-100 [000] ..s1. 10.000005: kfree: call_site=b+0x1/0x10 ptr=0000000000000001\n";
        var (e, rep) = ReplayEngineTests.Run(m, new MachineObjects(m), t);
        Assert.Equal(0, rep.AllocatorErrors);
        Assert.True(1 == rep.UnknownVmapFrees, $"{e.Replayed(EventKind.AllocVmapArea)} {e.Failures(EventKind.AllocVmapArea)} {e.Skipped(EventKind.AllocVmapArea)} {rep.AllocationFailures} {string.Join(";", rep.AtomicContextViolationSamples)}");
        Assert.True(rep.AtomicContextViolations == 1, string.Join("; ", rep.AtomicContextViolationSamples)); // vfree might_sleep under a spinlock
        Assert.Equal(0, e.LiveObjects);
        Assert.Equal(0, e.LiveVmaps);
        Assert.Equal(0, m.Vmalloc.BusyAreas);
    }
}
