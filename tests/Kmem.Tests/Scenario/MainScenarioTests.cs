using System.Text.Json;
using Kmem.Scenario;

namespace Kmem.Tests.Scenario;

/// <summary>The whole main scenario, shortened: every phase runs, the pressure phase really reclaims and kills, and nothing leaks.</summary>
public class MainScenarioTests
{
    [Fact]
    public void Short_run_on_x86_64_reclaims_kills_and_returns_everything()
    {
        using var m = Machine.Boot(MachineConfig.Default);
        MainScenario.Result r;
        using (var s = new MainScenario(m, new ScenarioOptions { Seed = 3, Length = 0.1 }))
            r = s.Run();

        Assert.Null(r.Inconsistency);
        Assert.Equal(0, r.LeakedPages);
        Assert.Equal(0, r.LeakedObjects);
        Assert.Equal(m.TotalRamPages, m.FreePages);
        Assert.True(r.Clean, r.Inconsistency);

        // Memory pressure did what the kernel does: kswapd, direct reclaim, swap, one OOM kill of the hog.
        Assert.True(r.Reclaim.KswapdWakeups > 0, "kswapd woke");
        Assert.True(r.Reclaim.DirectReclaimStalls > 0, "direct reclaim");
        Assert.True(r.Reclaim.PagesSwappedOut > 0, "swap out");
        Assert.Equal(1, r.OomKills);
        Assert.Contains(r.OomLog, l => l.Contains("Killed process") && l.Contains("(memhog)"));

        // GFP semantics: atomic allocations never block; the packet storm makes one fail; a sleeping type blocked.
        var byName = r.Gfp.ToDictionary(e => e.Name);
        Assert.Equal(0, byName["GFP_ATOMIC"].BlockedMs);
        Assert.Equal(0, byName["GFP_NOWAIT"].BlockedMs);
        Assert.True(byName["GFP_ATOMIC"].Failures >= 1, "atomic failure: " + string.Join(" | ", r.Phases.Select(p => p.Summary)));
        Assert.True(byName["GFP_HIGHUSER_MOVABLE"].BlockedMs > 0, "user faults blocked in reclaim");
        Assert.Contains(r.Phases, p => p.Phase == "memory pressure" && p.Summary.Contains("packet storm got"));

        // The kernel-vs-user comparison: mmap is lazily backed, alloc_pages is not.
        Assert.Equal(0, r.KernelVsUser.UserRssAfterMmapKb);
        Assert.Equal(r.KernelVsUser.Bytes / 1024, r.KernelVsUser.KernelAllocatedKb);

        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms)) MainScenario.WriteJson(r, w);
        using var doc = JsonDocument.Parse(ms.ToArray());
        var root = doc.RootElement;
        foreach (var key in new[] { "gfp", "reclaim", "oom_kills", "leaked_pages", "leaked_objects" })
            Assert.True(root.TryGetProperty(key, out _), key);
        foreach (var type in new[] { "GFP_KERNEL", "GFP_ATOMIC", "GFP_NOIO" })
        {
            var t = root.GetProperty("gfp").GetProperty(type);
            Assert.True(t.GetProperty("allocations").GetInt64() > 0, type);
            Assert.True(t.TryGetProperty("failures", out _));
            Assert.True(t.TryGetProperty("blocked_ms", out _));
        }
        foreach (var key in new[] { "kswapd_wakeups", "direct_reclaim", "pages_reclaimed", "pages_swapped_out" })
            Assert.True(root.GetProperty("reclaim").TryGetProperty(key, out _), key);
    }

    [Fact]
    public void Short_run_on_x86_32_shows_highmem_and_window_exhaustion()
    {
        using var m = Machine.Boot(new MachineConfig { Profile = ArchProfile.X86_32, RamBytes = 2L << 30 });
        MainScenario.Result r;
        using (var s = new MainScenario(m, new ScenarioOptions { Seed = 5, Length = 0.1 }))
            r = s.Run();
        Assert.True(r.Clean, r.Inconsistency);
        Assert.Contains("HIGHMEM frames", r.Highmem);
        Assert.Contains("vmap allocation for size", r.Highmem);
        Assert.Equal(1, r.OomKills);
    }
}
