using Kmem.Slab;

namespace Kmem.Tests.Slab;

internal static unsafe class SlabTestUtil
{
    /// <summary>A small machine (64 MiB, 2 CPUs) for slab tests.</summary>
    public static Machine Boot(int cpus = 2) => Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = cpus });

    /// <summary>Everything back: every cache shrunk, per-CPU page lists drained, every managed page free.</summary>
    public static void AssertAllPagesBack(Machine m)
    {
        m.Slab.ShrinkAll();
        m.Slab.RcuBarrier();
        m.Pages.DrainAllPages();
        Assert.Equal(0, m.Slab.SlabPages);
        foreach (var c in m.Slab.Caches)
        {
            Assert.Null(c.CheckInvariants());
            Assert.Equal(0, c.NumSlabs);
        }
        Assert.Null(m.Pages.CheckInvariants());
        Assert.Equal(m.TotalRamPages, m.FreePages);
        // The free fast paths tell a slab by PageFrame.SlabCache alone, so no page left without a slab may keep one.
        for (long pfn = 0; pfn < m.MemMap.MaxPfn; pfn++)
            Assert.True(m.MemMap.PfnToPage(pfn)->SlabCache == 0, $"pfn {pfn} is not a slab but has SlabCache {m.MemMap.PfnToPage(pfn)->SlabCache}");
    }
}
