using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// Which of the GFP-addressable zones a memory layout (an architecture profile) has. Bit <c>n</c> stands for
/// <see cref="ZoneType"/> value <c>n</c>, so a zone converts to its bit with a shift. Linux decides this at build
/// time (CONFIG_ZONE_DMA, CONFIG_ZONE_DMA32, CONFIG_HIGHMEM); kmem decides per profile at run time and passes the
/// set to <see cref="GfpZones.GfpZone(Gfp, ZoneSet)"/>, which applies Linux's OPT_ZONE_* fallbacks for the
/// zones that are missing. ZONE_MOVABLE and ZONE_DEVICE are not here: no GFP bit combination ever
/// requires them to exist (see <see cref="GfpZones.GfpZone(Gfp, ZoneSet)"/> on MOVABLE).
/// </summary>
[Flags]
public enum ZoneSet : byte
{
    /// <summary>No zones (invalid as a profile: every Linux configuration has ZONE_NORMAL).</summary>
    None = 0,
    /// <summary>ZONE_DMA (x86: the first 16 MiB).</summary>
    Dma = 1 << (int)ZoneType.Dma,
    /// <summary>ZONE_DMA32 (x86-64: below 4 GiB).</summary>
    Dma32 = 1 << (int)ZoneType.Dma32,
    /// <summary>ZONE_NORMAL: always present.</summary>
    Normal = 1 << (int)ZoneType.Normal,
    /// <summary>ZONE_HIGHMEM (32-bit: memory above the ~896 MiB direct map).</summary>
    HighMem = 1 << (int)ZoneType.HighMem,
}

/// <summary>The zone sets of the layouts Linux ships, and a membership test.</summary>
public static class ZoneSets
{
    /// <summary>x86-64: DMA, DMA32, NORMAL (no HIGHMEM: everything is direct-mapped).</summary>
    public const ZoneSet X86_64 = ZoneSet.Dma | ZoneSet.Dma32 | ZoneSet.Normal;

    /// <summary>x86-32 with CONFIG_HIGHMEM: DMA, NORMAL, HIGHMEM (no DMA32: all of lowmem is below 4 GiB).</summary>
    public const ZoneSet X86_32 = ZoneSet.Dma | ZoneSet.Normal | ZoneSet.HighMem;

    /// <summary>True when <paramref name="zone"/> is in <paramref name="set"/>; MOVABLE and DEVICE are never in a set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Contains(this ZoneSet set, ZoneType zone) =>
        (uint)zone <= (uint)ZoneType.HighMem && ((uint)set & (1u << (int)zone)) != 0;
}
