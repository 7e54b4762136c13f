using G = Kmem.Gfp;

namespace Kmem.Tests.PageAlloc;

/// <summary>After boot and warm-up, a million alloc/free operations allocate no managed memory.</summary>
public unsafe class ZeroAllocationTests
{
    [Fact]
    public void MillionOps_NoManagedAllocation()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = 2 });
        var pa = m.Pages;
        var held = new nint[64];
        void Round(int i)
        {
            // Mixed: order-0 pairs (pcp fast path), order 2 and 3 (pcp generic), order 5 (buddy), zeroed, and a batch
            // of 64 held pages so refills and bulk frees happen.
            pa.FreePages(pa.AllocPages(G.Kernel, 0), 0);
            pa.FreePages(pa.AllocPages(G.Atomic | G.Zero, 0), 0);
            if ((i & 7) == 0) pa.FreePages(pa.AllocPages(G.Kernel | G.Comp, 3), 3);
            if ((i & 15) == 0) pa.FreePages(pa.AllocPages(G.HighUserMovable, 2), 2);
            if ((i & 63) == 0) pa.FreePages(pa.AllocPages(G.Kernel, 5), 5);
            if ((i & 1023) == 0)
            {
                for (int k = 0; k < held.Length; k++) held[k] = (nint)pa.AllocPages(G.Kernel, 0);
                for (int k = 0; k < held.Length; k++) pa.FreePages((PageFrame*)held[k], 0);
            }
        }
        for (int i = 0; i < 20_000; i++) Round(i);
        foreach (var cpu in new[] { 0, 1 })
        {
            using var pin = Cpu.Pin(cpu);
            for (int i = 0; i < 5_000; i++) Round(i);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        int ops = 0;
        for (int i = 0; ops < 1_000_000; i++)
        {
            Round(i);
            ops += 4; // at least two alloc+free pairs per round
        }
        long after = GC.GetAllocatedBytesForCurrentThread();
        Assert.Equal(0, after - before);
        m.Pages.DrainAllPages();
        Assert.Equal(m.TotalRamPages, m.FreePages);
    }
}
