using Kmem.Diagnostics;
using Kmem.Scenario;

namespace Kmem.Tests.Reclaim;

using Gfp = Kmem.Gfp;

public unsafe class ShrinkerSlabTests
{
    [Fact]
    public void ReclaimableSlabGivesPagesBackThroughAnFsShrinkerOnly()
    {
        using var m = ReclaimTests.Small();
        m.Reclaim.StallTimeout = TimeSpan.FromMilliseconds(200);
        var done = false;
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { Body(); }
            catch (Exception e) { error = e; }
        }) { IsBackground = true };
        void Body()
        {
            using (var d = new DentryCache(m))
            {
                Assert.Equal(20000, d.Populate(20000));
                long slabPages = m.Stat[VmItem.NrSlabReclaimable];
                Assert.True(slabPages > 500);
                var held = ReclaimTests.FillKernel(m, Gfp.NoWarn); // wakes nobody
                // GFP_NOFS: the filesystem shrinker is skipped, nothing else is reclaimable: the allocation fails.
                Assert.True(m.Pages.AllocPages((Gfp.NoFs & ~Gfp.KswapdReclaim) | Gfp.NoWarn, 0) == null);
                Assert.Equal(20000, d.Count);
                Assert.Equal(0, d.Shrinker.ScanCalls);
                // GFP_KERNEL: the shrinker frees unused dentries and the empty slabs go back to the page allocator.
                for (int i = 0; i < 50; i++)
                {
                    PageFrame* p = m.Pages.AllocPages(Gfp.Kernel & ~Gfp.KswapdReclaim, 0);
                    Assert.True(p != null);
                    held.Add((nint)p);
                }
                Assert.True(d.Count < 20000);
                Assert.True(m.Stat[VmItem.NrSlabReclaimable] < slabPages);
                Assert.True(m.Stat[VmItem.SlabsScanned] > 0);
                Assert.Equal(0, m.Stat[VmItem.OomKill]);
                ReclaimTests.FreeAll(m, held);
            }
            done = true;
        }
        t.Start();
        Assert.True(t.Join(20000), "shrinker test did not finish");
        if (error != null) throw new Xunit.Sdk.XunitException("in the test thread: " + error);
        Assert.True(done);
        m.Slab.ShrinkAll();
        ReclaimTests.AssertNothingLeaked(m);
    }
}
