using Kmem.Diagnostics;
using Kmem.Proc;
using Kmem.Scenario;

namespace Kmem.Tests.Reclaim;

using Gfp = Kmem.Gfp;

public unsafe class ScenarioAndViewTests
{
    [Fact]
    public void PressureScenarioReclaimsSwapsAndKillsThenLeavesNothing()
    {
        using var m = ReclaimTests.Small(16384);
        var before = ReclaimReport.Of(m);
        using (var mp = new MemoryPressure(m))
        {
            mp.SwapOn(8L << 20);
            var db = mp.SpawnProcess("postgres", 16L << 20);
            var hog = mp.SpawnProcess("leaky", 24L << 20, oomScoreAdj: 300);
            mp.FillPageCache("logs", 2000, dirtyFraction: 0.25);
            var atomic = mp.KernelAllocateIn(Kmem.Context.RunInSoftirq, Gfp.Atomic | Gfp.NoWarn, 64);
            Assert.Equal(64, atomic.Allocated);
            var r = mp.KernelAllocate(Gfp.Kernel, 9000);
            Assert.Equal(9000, r.Allocated);
            var d = ReclaimReport.Of(m).Since(before);
            Assert.True(d.PagesReclaimed > 0);
            Assert.True(d.PagesSwappedOut > 0);
            Assert.True(d.KswapdWakeups > 0);
            Assert.Equal(1, d.OomKills);
            Assert.True(hog.IsKilled);
            Assert.False(db.IsKilled);
            string vmstat = ProcViews.Render(m, "vmstat");
            Assert.Contains("oom_kill 1\n", vmstat);
            Assert.Matches(@"pswpout [1-9]\d*\n", vmstat);
            Assert.Contains("Name:\tpostgres", ProcViews.Render(m, "status"));
            Assert.Contains("/dev/kmem-swap", ProcViews.Render(m, "swaps"));
            string meminfo = ProcViews.Render(m, "meminfo");
            Assert.Contains("SwapTotal:          8192 kB", meminfo);
        }
        ReclaimTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void KernelVsUserSixtyFourMiB()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 256L << 20 });
        var r = MemoryPressure.CompareKernelVsUser(m);
        Assert.Equal(64L << 20, r.Bytes);
        Assert.Equal(0, r.UserRssAfterMmapKb);
        Assert.Equal(65536, r.UserVmSizeKb);
        Assert.Equal(16 * 4, r.UserRssAfterTouchKb);
        Assert.Equal(65536, r.KernelAllocatedKb);
        Assert.Equal(16, r.KernelBlocks);
        Assert.Equal(65536, r.KernelFreeDropKb);
        m.Pages.DrainAllPages();
        Assert.Equal(m.TotalRamPages, m.FreePages);
    }

    [Fact]
    public void VmstatListsLinuxNamesInOrder()
    {
        using var m = ReclaimTests.Small();
        var names = ProcViews.Render(m, "vmstat").Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.Split(' ')[0]).ToList();
        Assert.Equal("nr_free_pages", names[0]);
        foreach (var n in new[] { "pgalloc_dma32", "pgfree", "pgfault", "pgmajfault", "pswpin", "pswpout", "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct", "allocstall_normal", "compact_stall", "compact_success", "oom_kill", "kswapd_wakeups" })
            Assert.Contains(n, names);
        Assert.True(names.IndexOf("pswpin") < names.IndexOf("pgalloc_dma") && names.IndexOf("pgsteal_kswapd") < names.IndexOf("pgscan_kswapd"));
    }
}
