using System.Text;
using System.Text.Json;
using Kmem.Tracing;

namespace Kmem.Tests.Tracing;

public class TraceStatisticsTests
{
    // A scripted window: A allocated on CPU0 and freed on CPU1 (cross-CPU), B allocated in softirq and live at the
    // end, C freed but never seen allocated, one kfree(NULL), one order-2 page alloc + free on the same CPU,
    // one page freed that was never allocated, and a vmap area.
    private const string Script = """
        # scripted
                    bash-1       [000] .....     1.000000: kmalloc: call_site=siteA+0x1/0x10 ptr=000000000000000a bytes_req=100 bytes_alloc=128 gfp_flags=GFP_KERNEL node=-1 accounted=false
                    bash-1       [000] ..s1.     1.000001: kmem_cache_alloc: call_site=siteB+0x2/0x20 ptr=000000000000000b name=filp bytes_req=256 bytes_alloc=256 gfp_flags=GFP_ATOMIC node=-1 accounted=false
                    bash-1       [001] .....     1.000002: kfree: call_site=freeA+0x3/0x30 ptr=000000000000000a
                    bash-1       [001] .....     1.000003: kmem_cache_free: call_site=freeC+0x4/0x40 ptr=000000000000000c name=filp
                    bash-1       [001] .....     1.000004: kfree: call_site=freeN+0x5/0x50 ptr=0000000000000000
                    bash-1       [000] d..2.     1.000005: mm_page_alloc: page=0000000000001111 pfn=0x100 order=2 migratetype=0 gfp_flags=GFP_ATOMIC|__GFP_COMP
                    bash-1       [000] .....     1.000006: mm_page_free: page=0000000000001111 pfn=0x100 order=2
                    bash-1       [000] .....     1.000007: mm_page_free: page=0000000000002222 pfn=0x200 order=0
                    bash-1       [000] .....     1.000008: alloc_vmap_area: va_start: 18446683600640114688 size=20480 align=16384 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0
        """;

    private static TraceStatistics FromScript()
    {
        using var r = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(Script)), "script.trace", TraceCompression.None);
        var stats = new TraceStatistics(r.Strings);
        while (r.TryRead(out TraceEvent ev))
            stats.Add(ev);
        return stats;
    }

    [Fact]
    public void Scripted_window()
    {
        TraceStatistics s = FromScript();
        Assert.Equal(9, s.Events);
        Assert.Equal((2L, 3L, 1L), (s.SlabAllocs, s.SlabFrees, s.NullFrees));
        Assert.Equal((356L, 384L), (s.BytesRequested, s.BytesAllocated));
        Assert.Equal(100.0 * 28 / 384, s.FragmentationPercent, 9);
        Assert.Equal((1L, 1L), (s.CrossCpuFrees, s.UnknownFrees));
        Assert.Equal((1L, 256L), (s.LiveObjects, s.LiveBytes));
        Assert.Equal((2L, 1L, 1L), (s.AtomicAllocs, s.SoftirqAllocs, s.IrqsOffAllocs));
        Assert.Equal((1L, 4L, 2L, 5L), (s.PageAllocs, s.PagesAllocated, s.PageFrees, s.PagesFreed));
        Assert.Equal((0L, 1L, 0L), (s.PageCrossCpuFrees, s.UnknownPageFrees, s.LivePageBlocks));
        Assert.Equal(1, s.PageAllocsByOrder[2]);
        Assert.Equal(1, s.PageAllocsByMigrateType[(int)MigrateType.Unmovable]);
        Assert.Equal("GFP_ATOMIC|__GFP_COMP", Assert.Single(s.PageAllocsByGfp).Key);
        Assert.Equal((1L, 20480L), (s.VmapAllocs, s.VmapBytes));
        Assert.Equal(["siteB+0x2/0x20", "siteA+0x1/0x10"], s.TopCallSitesByBytes(10).Select(r => r.Name));
        var filp = Assert.Single(s.TopCaches(10));
        Assert.Equal(("filp", 1L, 1L), (filp.Name, filp.Allocs, filp.Frees));
        Assert.Equal(128, Assert.Single(s.KmallocBySizeClass).Key);
    }

    [Fact]
    public void Text_and_json_forms()
    {
        TraceStatistics s = FromScript();
        string text = s.ToText(5);
        Assert.Contains("internal fragmentation", text);
        Assert.Contains("siteA+0x1/0x10", text);
        Assert.Contains("TOP 5 CACHES", text);

        using var doc = JsonDocument.Parse(s.ToJson(5));
        JsonElement root = doc.RootElement;
        Assert.Equal(9, root.GetProperty("events").GetInt64());
        Assert.Equal(1, root.GetProperty("slab").GetProperty("crossCpuFrees").GetInt64());
        Assert.Equal(2, root.GetProperty("eventsByKind").GetProperty("kfree").GetInt64());
        Assert.Equal("siteB+0x2/0x20", root.GetProperty("topCallSitesByBytes")[0].GetProperty("name").GetString());
        Assert.Equal(1, root.GetProperty("pages").GetProperty("byOrder")[2].GetInt64());
    }

    [Fact]
    public void Real_trace_statistics_are_consistent()
    {
        TraceStatistics s = TraceStatistics.FromFile(TestData.TracePath("fs.trace.zst"));
        Assert.Equal(s.Lines, s.Events);
        Assert.Equal(s.Count(EventKind.Kmalloc) + s.Count(EventKind.KmemCacheAlloc), s.SlabAllocs);
        Assert.Equal(s.Count(EventKind.Kfree) + s.Count(EventKind.KmemCacheFree), s.SlabFrees);
        Assert.InRange(s.FragmentationPercent, 0.0, 50.0);
        Assert.True(s.BytesAllocated >= s.BytesRequested);
        Assert.True(s.UnknownFrees > 0, "a window starts with objects allocated before it");
        Assert.True(s.LiveObjects > 0, "a window ends with live objects");
        Assert.True(s.CrossCpuFrees > 0, "2-CPU machine");
        Assert.True(s.AtomicAllocs > 0);
        Assert.Equal(s.PageAllocs, s.PageAllocsByOrder.Sum());
        Assert.Equal(s.PageAllocs, s.PageAllocsByMigrateType.Sum());
        Assert.Equal(s.PageAllocs, s.PageAllocsByGfp.Sum(kv => kv.Value));
        Assert.Equal(10, s.TopCallSitesByCount(10).Count);
        Assert.Contains("names_cache", s.TopCaches(50).Select(c => c.Name));
        Assert.NotEmpty(s.ToText());
    }
}
