using Kmem.PageAlloc;
using G = Kmem.Gfp;

namespace Kmem.Tests.PageAlloc;

/// <summary>
/// Watermark reserves (__zone_watermark_ok with gfp_to_alloc_flags), at exact boundaries.
/// Machine: x86_64, one zone DMA32 = 4096 pages, 1 CPU. min_free_kbytes = int_sqrt(16384 kB * 16) = 512, so
/// min = 128 pages, low = 128 + max(128/4, 4) = 160, high = 192. pcp batch is 1 and nothing is freed, so every
/// order-0 allocation takes exactly one page off the buddy lists and NR_FREE_PAGES is exact. A request succeeds
/// while free &gt; its effective mark (order 0), so it stops with free == that mark.
/// </summary>
public unsafe class ReserveTests
{
    private const long Managed = 4096, Min = 128, Low = 160;

    /// <summary>A slow-path stub: records the free count when kswapd would be woken, and never reclaims.</summary>
    private sealed class Recorder(Zone zone) : IAllocSlowPath
    {
        public long FirstWakeAtFree = -1;
        public int Wakes;
        public void WakeKswapd(G gfp, int order, ZoneType highestZone)
        {
            if (Wakes++ == 0) FirstWakeAtFree = zone.FreePages;
        }
        public PageFrame* Allocate(G gfp, int order, ZoneType highestZone, AllocFlags allocFlags, PageAllocator.RetryAllocation retry) => null;
    }

    private static long AllocateUntilFailure(Machine m, G gfp)
    {
        long n = 0;
        while (m.Pages.AllocPages(gfp | G.NoWarn, 0) != null) n++;
        return n;
    }

    [Fact]
    public void Watermarks_AreWhatTheRemarksSay()
    {
        using var m = Boot.X86_64(dma32: Managed);
        var z = m.Pages.Zones.Single();
        Assert.Equal((Min, Low, 192L), (z.WmarkMin, z.WmarkLow, z.WmarkHigh));
        Assert.Equal(1, z.Pcp[0].Batch);
    }

    [Fact]
    public void GfpKernel_FastPathStopsAtLow_RetryAtMin()
    {
        using var m = Boot.X86_64(dma32: Managed);
        using var pin = Cpu.Pin(0);
        var z = m.Pages.Zones.Single();
        var rec = new Recorder(z);
        m.Pages.SlowPath = rec;
        // The fast path (ALLOC_WMARK_LOW) fails for the first time when free == low: that is when kswapd is woken.
        // The slow path's first retry is at ALLOC_WMARK_MIN without reserves, so GFP_KERNEL ends at free == min.
        long n = AllocateUntilFailure(m, G.Kernel);
        Assert.Equal(Low, rec.FirstWakeAtFree);
        Assert.Equal(Managed - Min, n);
        Assert.Equal(Min, z.FreePages);
        Assert.Null(m.Pages.CheckInvariants());
    }

    // After GFP_KERNEL has taken the zone down to min (128), how far does each request go?
    // Effective mark = min, less min/2 for ALLOC_MIN_RESERVE (__GFP_HIGH), then less a quarter of that for
    // ALLOC_NON_BLOCK (no __GFP_DIRECT_RECLAIM and no __GFP_NOMEMALLOC): 128 -> 64 -> 48 ("3/8 of min").
    [Theory]
    [InlineData("GFP_NOWAIT", 128L)]                               // ALLOC_NON_BLOCK alone grants nothing: fails at once
    [InlineData("GFP_KERNEL", 128L)]                               // no reserves
    [InlineData("GFP_KERNEL|__GFP_HIGH", 64L)]                     // MIN_RESERVE: min/2 (may sleep, so no NON_BLOCK)
    [InlineData("GFP_ATOMIC|__GFP_NOMEMALLOC", 64L)]               // NOMEMALLOC refuses NON_BLOCK: min/2
    [InlineData("GFP_ATOMIC", 48L)]                                // MIN_RESERVE + NON_BLOCK: 3/8 of min
    [InlineData("__GFP_HIGH", 48L)]                                // as Linux: no DIRECT_RECLAIM, so NON_BLOCK too
    [InlineData("GFP_KERNEL|__GFP_MEMALLOC", 0L)]                  // ALLOC_NO_WATERMARKS: the zone is emptied
    [InlineData("GFP_ATOMIC|__GFP_MEMALLOC", 0L)]
    [InlineData("GFP_ATOMIC|__GFP_MEMALLOC|__GFP_NOMEMALLOC", 64L)] // NOMEMALLOC wins over MEMALLOC, and refuses NON_BLOCK
    public void Reserves_AfterGfpKernelFails(string gfpText, long expectedFreeAtEnd)
    {
        G gfp = GfpFormat.Parse(gfpText);
        using var m = Boot.X86_64(dma32: Managed);
        using var pin = Cpu.Pin(0);
        var z = m.Pages.Zones.Single();
        Assert.Equal(Managed - Min, AllocateUntilFailure(m, G.Kernel));
        Assert.Equal(Min, z.FreePages);

        long n = AllocateUntilFailure(m, gfp);
        Assert.Equal(Min - expectedFreeAtEnd, n);
        Assert.Equal(expectedFreeAtEnd, z.FreePages);
        Assert.Null(m.Pages.CheckInvariants());
        // GFP_NOWAIT still fails afterwards, whatever the others took.
        Assert.True(m.Pages.AllocPages(G.NoWait, 0) == null);
    }

    [Fact]
    public void WatermarkOk_ExactBoundaries_HigherOrder()
    {
        // __zone_watermark_ok subtracts (1 << order) - 1 from free first: an order-2 request at mark 128 needs
        // free - 3 > 128, i.e. free >= 132.
        using var m = Boot.X86_64(dma32: Managed);
        var z = m.Pages.Zones.Single();
        Assert.True(PageAllocator.ZoneWatermarkOk(z, 2, Min, ZoneType.Normal, AllocFlags.WmarkMin, 132));
        Assert.False(PageAllocator.ZoneWatermarkOk(z, 2, Min, ZoneType.Normal, AllocFlags.WmarkMin, 131));
        // Reserve fractions on an odd mark: 101 -> MIN_RESERVE: 101 - 50 = 51 -> NON_BLOCK: 51 - 12 = 39.
        var atomic = PageAllocator.GfpToAllocFlags(G.Atomic, 0);
        Assert.True(PageAllocator.ZoneWatermarkOk(z, 0, 101, ZoneType.Normal, atomic, 40));
        Assert.False(PageAllocator.ZoneWatermarkOk(z, 0, 101, ZoneType.Normal, atomic, 39));
        var high = PageAllocator.GfpToAllocFlags(G.Kernel | G.High, 0);
        Assert.True(PageAllocator.ZoneWatermarkOk(z, 0, 101, ZoneType.Normal, high, 52));
        Assert.False(PageAllocator.ZoneWatermarkOk(z, 0, 101, ZoneType.Normal, high, 51));
    }

    [Fact]
    public void LowmemProtection_KeepsDmaFromNormalRequests()
    {
        // DMA 3840 + Normal 8192 (x86_64; no DMA32). DMA's protection against Normal requests = 8192 / 256 = 32 pages
        // on top of its watermark; GFP_DMA requests (highest zone DMA) see no protection.
        using var m = Boot.X86_64(dma: 3840, normal: 8192);
        using var pin = Cpu.Pin(0);
        var dma = m.Pages.GetZone(ZoneType.Dma)!;
        var normal = m.Pages.GetZone(ZoneType.Normal)!;
        Assert.Equal(32, dma.LowmemReserve[(int)ZoneType.Normal]);
        long kernel = AllocateUntilFailure(m, G.Kernel);
        // Normal drains to its min, then the walk falls back to DMA, which stops at min + 32.
        Assert.Equal(normal.WmarkMin, normal.FreePages);
        Assert.Equal(dma.WmarkMin + 32, dma.FreePages);
        long dmaOnly = AllocateUntilFailure(m, G.Kernel | G.Dma);
        Assert.Equal(32, dmaOnly);
        Assert.Equal(dma.WmarkMin, dma.FreePages);
        Assert.True(kernel > 0);
    }
}
