namespace Kmem.Tests.Gfp;

using G = Kmem.Gfp;

/// <summary>gfp_zone() over all 16 zone-bit combinations, for both layouts, and gfp_migratetype().</summary>
public class GfpZonesTests
{
    private const string Bad = "BAD";

    // bits, x86_64 (DMA, DMA32, NORMAL), x86_32 (DMA, NORMAL, HIGHMEM); from include/linux/gfp.h GFP_ZONE_TABLE
    // with the OPT_ZONE_* substitutions, and GFP_ZONE_BAD.
    public static TheoryData<uint, string, string> ZoneTable => new()
    {
        { 0x0, "Normal", "Normal" },
        { 0x1, "Dma", "Dma" },
        { 0x2, "Normal", "HighMem" },   // OPT_ZONE_HIGHMEM
        { 0x3, Bad, Bad },              // DMA|HIGHMEM
        { 0x4, "Dma32", "Normal" },     // OPT_ZONE_DMA32
        { 0x5, Bad, Bad },              // DMA|DMA32
        { 0x6, Bad, Bad },              // HIGHMEM|DMA32
        { 0x7, Bad, Bad },              // DMA|HIGHMEM|DMA32
        { 0x8, "Normal", "Normal" },    // MOVABLE alone is only a mobility hint
        { 0x9, "Dma", "Dma" },
        { 0xa, "Movable", "Movable" },  // MOVABLE|HIGHMEM: ZONE_MOVABLE as the walk's upper bound
        { 0xb, Bad, Bad },
        { 0xc, "Dma32", "Normal" },
        { 0xd, Bad, Bad },
        { 0xe, Bad, Bad },
        { 0xf, Bad, Bad },
    };

    [Theory]
    [MemberData(nameof(ZoneTable))]
    public void GfpZone_x86_64(uint bits, string x86_64, string x86_32)
    {
        _ = x86_32;
        Check(bits, ZoneSets.X86_64, x86_64);
    }

    [Theory]
    [MemberData(nameof(ZoneTable))]
    public void GfpZone_x86_32(uint bits, string x86_64, string x86_32)
    {
        _ = x86_64;
        Check(bits, ZoneSets.X86_32, x86_32);
    }

    private static void Check(uint bits, ZoneSet zones, string expected)
    {
        // The answer depends only on the zone bits: alone, and with the common types' other bits.
        foreach (G others in new[] { G.None, G.Kernel, G.Atomic | G.NoWarn, G.NoFs | G.Zero | G.Account })
        {
            G gfp = (G)bits | others;
            if (expected == Bad)
            {
                GfpException e = Assert.Throws<GfpException>(() => GfpZones.GfpZone(gfp, zones));
                Assert.Equal(gfp, e.Flags);
                Assert.Contains(GfpFormat.Format((G)bits), e.Message, StringComparison.Ordinal);
                Assert.Contains(GfpFormat.Format(gfp), e.Message, StringComparison.Ordinal);
                Assert.Contains("GFP_ZONE_BAD", e.Report, StringComparison.Ordinal);
                Assert.IsAssignableFrom<KmemException>(e);
            }
            else
            {
                Assert.Equal(Enum.Parse<ZoneType>(expected), GfpZones.GfpZone(gfp, zones));
            }
        }
    }

    [Theory]
    [InlineData(0x3u, "GFP_DMA|__GFP_HIGHMEM")]
    [InlineData(0x5u, "GFP_DMA|GFP_DMA32")]
    [InlineData(0x6u, "GFP_DMA32|__GFP_HIGHMEM")]
    [InlineData(0x7u, "GFP_DMA|GFP_DMA32|__GFP_HIGHMEM")]
    [InlineData(0xbu, "GFP_DMA|__GFP_HIGHMEM|__GFP_MOVABLE")]
    [InlineData(0xdu, "GFP_DMA|GFP_DMA32|__GFP_MOVABLE")]
    [InlineData(0xeu, "GFP_DMA32|__GFP_HIGHMEM|__GFP_MOVABLE")]
    [InlineData(0xfu, "GFP_DMA|GFP_DMA32|__GFP_HIGHMEM|__GFP_MOVABLE")]
    public void Bad_combinations_name_their_flags(uint bits, string names)
    {
        GfpException e = Assert.Throws<GfpException>(() => GfpZones.GfpZone(G.Kernel | (G)bits, ZoneSets.X86_64));
        Assert.Contains(names, e.Message, StringComparison.Ordinal);
        Assert.Contains($"mode:0x{0xcc0 | bits:x}(GFP_KERNEL|{names})", e.Report, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(G.Kernel, "Normal", "Normal")]
    [InlineData(G.Atomic, "Normal", "Normal")]
    [InlineData(G.Kernel | G.Dma, "Dma", "Dma")]
    [InlineData(G.Kernel | G.Dma32, "Dma32", "Normal")]
    [InlineData(G.HighUser, "Normal", "HighMem")]
    [InlineData(G.HighUserMovable | G.Comp, "Movable", "Movable")]
    [InlineData(G.TransHuge, "Movable", "Movable")]
    [InlineData(G.NoFs | G.Movable | G.Comp, "Normal", "Normal")]
    public void Kernel_types(G gfp, string x86_64, string x86_32)
    {
        Assert.Equal(Enum.Parse<ZoneType>(x86_64), GfpZones.GfpZone(gfp, ZoneSets.X86_64));
        Assert.Equal(Enum.Parse<ZoneType>(x86_32), GfpZones.GfpZone(gfp, ZoneSets.X86_32));
    }

    [Theory]
    [InlineData(ZoneType.Movable, ZoneSets.X86_64, ZoneType.Normal)]
    [InlineData(ZoneType.Movable, ZoneSets.X86_32, ZoneType.HighMem)]
    [InlineData(ZoneType.Device, ZoneSets.X86_32, ZoneType.HighMem)]
    [InlineData(ZoneType.HighMem, ZoneSets.X86_64, ZoneType.Normal)]
    [InlineData(ZoneType.Normal, ZoneSets.X86_64, ZoneType.Normal)]
    [InlineData(ZoneType.Normal, ZoneSets.X86_32, ZoneType.Normal)]
    [InlineData(ZoneType.Dma32, ZoneSets.X86_64, ZoneType.Dma32)]
    [InlineData(ZoneType.Dma32, ZoneSets.X86_32, ZoneType.Dma)]
    [InlineData(ZoneType.Dma, ZoneSets.X86_64, ZoneType.Dma)]
    [InlineData(ZoneType.Movable, ZoneSet.Normal, ZoneType.Normal)]
    public void HighestPresent_clamps_to_the_layout(ZoneType highest, ZoneSet zones, ZoneType expected) =>
        Assert.Equal(expected, GfpZones.HighestPresent(highest, zones));

    [Fact]
    public void HighestPresent_without_a_zone_below_throws() =>
        Assert.Throws<ArgumentException>(() => GfpZones.HighestPresent(ZoneType.Dma, ZoneSet.Normal));

    [Fact]
    public void Layout_without_Normal_is_rejected() =>
        Assert.Throws<ArgumentException>(() => GfpZones.GfpZone(G.Kernel, ZoneSet.Dma | ZoneSet.Dma32));

    [Theory]
    [InlineData(ZoneSets.X86_64, ZoneType.Dma, true)]
    [InlineData(ZoneSets.X86_64, ZoneType.Dma32, true)]
    [InlineData(ZoneSets.X86_64, ZoneType.Normal, true)]
    [InlineData(ZoneSets.X86_64, ZoneType.HighMem, false)]
    [InlineData(ZoneSets.X86_32, ZoneType.Dma32, false)]
    [InlineData(ZoneSets.X86_32, ZoneType.HighMem, true)]
    [InlineData(ZoneSets.X86_32, ZoneType.Movable, false)]
    [InlineData(ZoneSets.X86_32, ZoneType.Device, false)]
    public void ZoneSet_contains(ZoneSet set, ZoneType zone, bool expected) => Assert.Equal(expected, set.Contains(zone));

    [Theory]
    [InlineData(G.None, MigrateType.Unmovable)]
    [InlineData(G.Kernel, MigrateType.Unmovable)]
    [InlineData(G.Atomic | G.Comp, MigrateType.Unmovable)]
    [InlineData(G.HighUserMovable, MigrateType.Movable)]
    [InlineData(G.TransHugeLight, MigrateType.Movable)]
    [InlineData(G.NoFs | G.Movable, MigrateType.Movable)]
    [InlineData(G.Kernel | G.Reclaimable, MigrateType.Reclaimable)]
    [InlineData(G.Reclaimable | G.Io | G.NoWarn, MigrateType.Reclaimable)]
    public void MigrateTypeOf(G gfp, MigrateType expected) => Assert.Equal(expected, GfpZones.MigrateTypeOf(gfp));

    [Fact]
    public void MigrateTypeOf_both_mobility_bits_throws_naming_them()
    {
        G gfp = G.Kernel | G.Movable | G.Reclaimable;
        GfpException e = Assert.Throws<GfpException>(() => GfpZones.MigrateTypeOf(gfp));
        Assert.Equal(gfp, e.Flags);
        Assert.Contains("GFP_KERNEL|__GFP_MOVABLE|__GFP_RECLAIMABLE", e.Message, StringComparison.Ordinal);
        Assert.Contains("VM_WARN_ON", e.Report, StringComparison.Ordinal);
    }
}
