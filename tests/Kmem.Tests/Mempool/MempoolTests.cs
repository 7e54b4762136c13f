using Kmem.Tests.Reclaim;

namespace Kmem.Tests.Mempool;

using Gfp = Kmem.Gfp;
using Pool = Kmem.Mempool.Mempool;

public unsafe class MempoolTests
{
    [Fact]
    public void SleepingAllocWaitsForMempoolFreeInsteadOfFailing()
    {
        using var m = ReclaimTests.Small();
        using (var pool = Pool.CreatePagePool(m, 4, 0))
        {
            Assert.Equal(4, pool.CurrNr);
            var held = ReclaimTests.FillKernel(m);
            held.AddRange(ReclaimTests.FillKernel(m, Gfp.Atomic));
            // The allocator is dry: the reserve serves four callers, even GFP_NOIO ones.
            var got = new List<nint>();
            for (int i = 0; i < 4; i++)
            {
                nint e = pool.Alloc(Gfp.NoIo);
                Assert.NotEqual(0, e);
                got.Add(e);
            }
            // A non-sleeping caller fails at once...
            Assert.Equal(0, pool.Alloc(Gfp.Atomic));
            // ...a sleeping one waits for mempool_free.
            nint late = 0;
            var t = new Thread(() => late = pool.Alloc(Gfp.NoIo)) { IsBackground = true };
            t.Start();
            Assert.False(t.Join(200));
            pool.Free(got[^1]);
            got.RemoveAt(got.Count - 1);
            Assert.True(t.Join(5000));
            Assert.NotEqual(0, late);
            Assert.True(pool.Waits >= 1);
            got.Add(late);
            foreach (var e in got) pool.Free(e);
            Assert.Equal(4, pool.CurrNr);
            ReclaimTests.FreeAll(m, held);
        }
        ReclaimTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void KmallocAndSlabPoolsServeFromTheReserveUnderPressure()
    {
        using var m = ReclaimTests.Small();
        var cache = m.Slab.CreateCache("bio", 256)!;
        using (var kpool = Pool.CreateKmallocPool(m, 8, 512))
        using (var spool = Pool.CreateSlabPool(m, 8, cache))
        {
            var held = ReclaimTests.FillKernel(m);
            held.AddRange(ReclaimTests.FillKernel(m, Gfp.Atomic));
            m.Slab.ShrinkAll();
            var got = new List<(Pool, nint)>();
            // More than the reserve: the rest comes from partially used slabs, and none of it fails or sleeps past the reserve.
            for (int i = 0; i < 8; i++)
            {
                got.Add((kpool, kpool.Alloc(Gfp.NoIo)));
                got.Add((spool, spool.Alloc(Gfp.NoIo)));
            }
            Assert.All(got, g => Assert.NotEqual(0, g.Item2));
            foreach (var (pool, e) in got) pool.Free(e);
            Assert.Equal(8, kpool.CurrNr);
            Assert.Equal(8, spool.CurrNr);
            ReclaimTests.FreeAll(m, held);
        }
        m.Slab.DestroyCache(cache);
        m.Slab.ShrinkAll();
        ReclaimTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void FreeBeyondTheReserveGoesBackToTheAllocator()
    {
        using var m = ReclaimTests.Small();
        using (var pool = Pool.CreatePagePool(m, 2, 1))
        {
            var e = Enumerable.Range(0, 5).Select(_ => pool.Alloc(Gfp.Kernel)).ToList();
            Assert.Equal(2, pool.CurrNr); // allocator had memory: the reserve was not touched
            foreach (var x in e) pool.Free(x);
            Assert.Equal(2, pool.CurrNr);
        }
        ReclaimTests.AssertNothingLeaked(m);
    }
}
