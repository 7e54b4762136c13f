using Kmem.PageAlloc;

namespace Kmem.Tests.PageAlloc;

/// <summary>The boot arithmetic of mm/page_alloc.c, row by row, each row worked out by hand from Linux's formulas.</summary>
public class WatermarkTests
{
    // calculate_min_free_kbytes: int_sqrt(lowmem_kbytes * 16), clamped to [128, 262144].
    [Theory]
    [InlineData(0L, 128)]             // int_sqrt(0) = 0 -> clamped up
    [InlineData(1023L, 128)]          // int_sqrt(16368) = 127 -> clamped up
    [InlineData(1024L, 128)]          // int_sqrt(16384) = 128 exactly
    [InlineData(1025L, 128)]          // int_sqrt(16400) = 128
    [InlineData(16384L, 512)]         // 16 MiB: int_sqrt(262144) = 512
    [InlineData(523264L, 2893)]       // 512 MiB x86_64 (3840 + 126976 pages): int_sqrt(8372224) = 2893
    [InlineData(6645536L, 10311)]     // int_sqrt(106328576) = 10311 (10311^2 = 106316721, 10312^2 = 106337344)
    [InlineData(4294967296L, 262144)] // 4 TiB: int_sqrt(2^36) = 2^18 = 262144, the cap exactly
    [InlineData(8589934592L, 262144)] // 8 TiB: 370727 -> clamped down
    public void MinFreeKbytes(long lowmemKbytes, int expected) =>
        Assert.Equal(expected, Watermarks.CalculateMinFreeKbytes(lowmemKbytes));

    [Theory]
    [InlineData(0UL, 0UL)]
    [InlineData(1UL, 1UL)]
    [InlineData(3UL, 1UL)]
    [InlineData(4UL, 2UL)]
    [InlineData(99UL, 9UL)]
    [InlineData(ulong.MaxValue, 4294967295UL)]
    [InlineData(18446744065119617025UL, 4294967295UL)] // (2^32 - 1)^2 exactly
    public void IntSqrt(ulong x, ulong expected) => Assert.Equal(expected, Watermarks.IntSqrt(x));

    [Fact]
    public void DefaultMinFreeKbytes_FromBootedMachine()
    {
        // 512 MiB x86_64: DMA 3840 + DMA32 (131072 - 4096) = 130816 managed pages = 523264 kB -> 2893.
        using var m = Machine.Boot(new MachineConfig { RamBytes = 512L << 20, Cpus = 1 });
        Assert.Equal(2893, m.Pages.MinFreeKbytes);
        // pages_min = 2893 >> 2 = 723, split by managed share: DMA 723 * 3840 / 130816 = 21, DMA32 723 * 126976 / 130816 = 701.
        Assert.Equal(21, m.Pages.GetZone(ZoneType.Dma)!.WmarkMin);
        Assert.Equal(701, m.Pages.GetZone(ZoneType.Dma32)!.WmarkMin);
        // low = min + max(min_share >> 2, managed * 10 / 10000): DMA 21 + max(5, 3) = 26, high 31;
        // DMA32 701 + max(175, 126) = 876, high 1051.
        Assert.Equal(26, m.Pages.GetZone(ZoneType.Dma)!.WmarkLow);
        Assert.Equal(31, m.Pages.GetZone(ZoneType.Dma)!.WmarkHigh);
        Assert.Equal(876, m.Pages.GetZone(ZoneType.Dma32)!.WmarkLow);
        Assert.Equal(1051, m.Pages.GetZone(ZoneType.Dma32)!.WmarkHigh);
    }

    // HIGHMEM: min = managed / 1024 clamped to [SWAP_CLUSTER_MAX = 32, 128]; low/high steps still come from the
    // zone's share of pages_min (which highmem takes as tmp) or the scale factor.
    [Theory]
    [InlineData(4096L, 32L)]     // 4 -> 32
    [InlineData(32768L, 32L)]    // 32 exactly
    [InlineData(65536L, 64L)]    // 64
    [InlineData(131072L, 128L)]  // 128 exactly
    [InlineData(262144L, 128L)]  // 256 -> 128
    public void HighmemMinClamp(long highPages, long expectedMin)
    {
        using var m = Machine.Boot(new MachineConfig
        {
            Profile = ArchProfile.X86_32,
            Cpus = 1,
            ZoneManagedPages = new Dictionary<ZoneType, long> { [ZoneType.Dma] = 3840, [ZoneType.Normal] = 8192, [ZoneType.HighMem] = highPages },
        });
        var high = m.Pages.GetZone(ZoneType.HighMem)!;
        Assert.Equal(expectedMin, high.WmarkMin);
        // lowmem = 3840 + 8192 = 12032 pages = 48128 kB -> min_free_kbytes = int_sqrt(770048) = 877, pages_min = 219.
        Assert.Equal(877, m.Pages.MinFreeKbytes);
        long tmp = 219 * highPages / 12032; // the highmem zone's "share", used only for the low/high step
        long step = Math.Max(tmp >> 2, highPages * 10 / 10000);
        Assert.Equal(expectedMin + step, high.WmarkLow);
        Assert.Equal(expectedMin + 2 * step, high.WmarkHigh);
        // Lowmem zones split pages_min among lowmem only: highmem does not dilute them.
        Assert.Equal(219 * 3840 / 12032, m.Pages.GetZone(ZoneType.Dma)!.WmarkMin);
        Assert.Equal(219 * 8192 / 12032, m.Pages.GetZone(ZoneType.Normal)!.WmarkMin);
    }

    [Fact]
    public void LowmemReserve_AsTheRealKernel_AndWithCustomRatios()
    {
        using var m = Boot.X86_64(dma: 3840, dma32: 772808, normal: 884736, cpus: 2, minFreeKbytes: 67584);
        var dma = m.Pages.GetZone(ZoneType.Dma)!;
        var dma32 = m.Pages.GetZone(ZoneType.Dma32)!;
        var normal = m.Pages.GetZone(ZoneType.Normal)!;
        // DMA vs DMA32 allocations: 772808 / 256 = 3018; vs Normal and above: (772808 + 884736) / 256 = 6474.
        Assert.Equal(new long[] { 0, 3018, 6474, 0, 6474, 6474 }, dma.LowmemReserve);
        // DMA32 vs Normal: 884736 / 256 = 3456.
        Assert.Equal(new long[] { 0, 0, 3456, 0, 3456, 3456 }, dma32.LowmemReserve);
        Assert.All(normal.LowmemReserve, r => Assert.Equal(0, r));

        // A ratio of 0 switches protection off for that zone; ratio 1 reserves everything above.
        using var m2 = Machine.Boot(new MachineConfig
        {
            Cpus = 1,
            ZoneManagedPages = new Dictionary<ZoneType, long> { [ZoneType.Dma] = 3840, [ZoneType.Dma32] = 8192, [ZoneType.Normal] = 4096 },
            LowmemReserveRatio = new Dictionary<ZoneType, int> { [ZoneType.Dma] = 0, [ZoneType.Dma32] = 1, [ZoneType.Normal] = 32 },
        });
        Assert.All(m2.Pages.GetZone(ZoneType.Dma)!.LowmemReserve, r => Assert.Equal(0, r));
        Assert.Equal(4096, m2.Pages.GetZone(ZoneType.Dma32)!.LowmemReserve[(int)ZoneType.Normal]);
    }

    // zone_batchsize: min(managed >> 10, 256) / 4, at least 1, then rounddown_pow_of_two(b + b/2) - 1, at least 1.
    [Theory]
    [InlineData(1024L, 1)]      // 1 / 4 = 0 -> 1 -> rounddown(1) - 1 = 0 -> 1
    [InlineData(3840L, 1)]      // the real DMA zone: batch 1
    [InlineData(8192L, 1)]      // 8 / 4 = 2 -> rounddown(3) - 1 = 1
    [InlineData(16384L, 3)]     // 16 / 4 = 4 -> rounddown(6) - 1 = 3
    [InlineData(32768L, 7)]     // 8 -> 12 -> 7
    [InlineData(65536L, 15)]    // 16 -> 24 -> 15
    [InlineData(131072L, 31)]   // 32 -> 48 -> 31
    [InlineData(262144L, 63)]   // 64 -> 96 -> 63
    [InlineData(772808L, 63)]   // the real DMA32 zone: capped at 1 MiB = 256 pages -> 63
    [InlineData(884736L, 63)]   // the real Normal zone
    public void ZoneBatchSize(long managed, int expected) => Assert.Equal(expected, Watermarks.ZoneBatchSize(managed));

    // zone_highsize: high_min = low / cpus, high_max = (managed / 8) / cpus, each at least 4 * batch.
    // Rows: (managed, cpus, min_free_kbytes) -> (batch, high_min, high_max); the first three are the real kernel's.
    [Theory]
    [InlineData(3840L, 772808L, 884736L, 2, "DMA", 1, 24, 240)]
    [InlineData(3840L, 772808L, 884736L, 2, "DMA32", 63, 4911, 48300)]
    [InlineData(3840L, 772808L, 884736L, 2, "Normal", 63, 5623, 55296)]
    [InlineData(3840L, 772808L, 884736L, 1, "DMA32", 63, 9823, 96601)]
    public void PagesetHighAndBatch(long dma, long dma32, long normal, int cpus, string zoneName, int batch, int highMin, int highMax)
    {
        using var m = Boot.X86_64(dma: dma, dma32: dma32, normal: normal, cpus: cpus, minFreeKbytes: 67584);
        var z = m.Pages.GetZone(ZoneNames.Parse(zoneName))!;
        foreach (var pcp in z.Pcp)
        {
            Assert.Equal(batch, pcp.Batch);
            Assert.Equal(highMin, pcp.HighMin);
            Assert.Equal(highMax, pcp.HighMax);
        }
    }

    [Fact]
    public void PagesetHigh_FloorIsFourBatches()
    {
        // DMA32 = 4096 pages, 64 CPUs: low / 64 and managed / 8 / 64 are both below 4 * batch (4 * 1).
        using var m = Boot.X86_64(dma32: 4096, cpus: 64);
        var pcp = m.Pages.Zones.Single().Pcp[0];
        Assert.Equal(1, pcp.Batch);
        Assert.Equal(4, pcp.HighMin);
        Assert.Equal(8, pcp.HighMax); // 4096 / 8 / 64 = 8 > 4
    }
}
