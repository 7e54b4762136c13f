using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// The zone and migratetype a GFP mask asks for: Linux's gfp_zone() and gfp_migratetype() (include/linux/gfp.h).
/// </summary>
/// <remarks>
/// <para><b>Zone modifiers.</b> The four low bits (GFP_ZONEMASK: DMA, HIGHMEM, DMA32, MOVABLE) index a 16-entry
/// table giving the <i>highest</i> zone the request may use; the allocator then walks the zonelist downwards from
/// there (MOVABLE → HIGHMEM → NORMAL → DMA32 → DMA). At most one of DMA, DMA32, HIGHMEM may be set; MOVABLE is
/// also a mobility hint and combines with any of them. The eight combinations with two or more of DMA/DMA32/HIGHMEM
/// are Linux's GFP_ZONE_BAD set and throw <see cref="GfpException"/>:</para>
/// <code>
/// bits  flags                      zone (all configured)  x86_64   x86_32
/// 0x0   -                          NORMAL                 Normal   Normal
/// 0x1   DMA                        DMA                    Dma      Dma
/// 0x2   HIGHMEM                    HIGHMEM                Normal   HighMem
/// 0x3   DMA|HIGHMEM                BAD
/// 0x4   DMA32                      DMA32                  Dma32    Normal
/// 0x5   DMA|DMA32                  BAD
/// 0x6   HIGHMEM|DMA32              BAD
/// 0x7   DMA|HIGHMEM|DMA32          BAD
/// 0x8   MOVABLE                    NORMAL                 Normal   Normal
/// 0x9   MOVABLE|DMA                DMA                    Dma      Dma
/// 0xa   MOVABLE|HIGHMEM            MOVABLE                Movable  Movable
/// 0xb   MOVABLE|HIGHMEM|DMA        BAD
/// 0xc   MOVABLE|DMA32              DMA32                  Dma32    Normal
/// 0xd   MOVABLE|DMA32|DMA          BAD
/// 0xe   MOVABLE|DMA32|HIGHMEM      BAD
/// 0xf   all four                   BAD
/// </code>
/// <para><b>Missing zones.</b> Linux builds the table with OPT_ZONE_DMA / OPT_ZONE_DMA32 / OPT_ZONE_HIGHMEM, which
/// are ZONE_NORMAL when the config lacks that zone. kmem applies the same substitution at run time from the
/// profile's <see cref="ZoneSet"/>.</para>
/// <para><b>MOVABLE|HIGHMEM.</b> Linux returns ZONE_MOVABLE whether or not that zone is populated; it is only the
/// upper bound (highest_zoneidx) of the zonelist walk, which skips absent and empty zones, and it is also the
/// index used for lowmem_reserve. kmem does the same: <see cref="GfpZone"/> returns <see cref="ZoneType.Movable"/>
/// and the allocator clamps with <see cref="HighestPresent"/> (kmem never populates ZONE_MOVABLE, which Linux
/// only does with kernelcore=/movablecore= or hotplugged memory). So GFP_HIGHUSER_MOVABLE starts at HighMem on
/// x86_32 and at Normal on x86_64, as in Linux.</para>
/// <para><b>Checks.</b> Linux checks GFP_ZONE_BAD and the double mobility bits only under CONFIG_DEBUG_VM; kmem
/// always checks (two shifts and a test), because a wrong zone index corrupts per-zone accounting silently.</para>
/// </remarks>
public static class GfpZones
{
    /// <summary>GFP_ZONEMASK: the four zone-modifier bits.</summary>
    public const Gfp ZoneMask = Gfp.Dma | Gfp.HighMem | Gfp.Dma32 | Gfp.Movable;

    /// <summary>GFP_MOVABLE_MASK: the two mobility bits; shifted right by 3 they are the migratetype.</summary>
    public const Gfp MobilityMask = Gfp.Movable | Gfp.Reclaimable;

    private const int MobilityShift = 3; // GFP_MOVABLE_SHIFT: __GFP_MOVABLE is 1 << 3.

    // GFP_ZONE_BAD: bit n set when zone bits n are forbidden (two or more of DMA/DMA32/HIGHMEM).
    private const uint ZoneBad =
        1u << 0x3 | 1u << 0x5 | 1u << 0x6 | 1u << 0x7 | 1u << 0xb | 1u << 0xd | 1u << 0xe | 1u << 0xf;

    // GFP_ZONE_TABLE with every zone configured: 4 bits per entry, entry n = zone for zone bits n.
    // Linux packs it into one long the same way, to make gfp_zone() a shift and a mask. BAD entries read as 0.
    private const int TableShift = 4;
    private const ulong ZoneTable =
        (ulong)ZoneType.Normal << (0x0 * TableShift)
        | (ulong)ZoneType.Dma << (0x1 * TableShift)
        | (ulong)ZoneType.HighMem << (0x2 * TableShift)
        | (ulong)ZoneType.Dma32 << (0x4 * TableShift)
        | (ulong)ZoneType.Normal << (0x8 * TableShift)
        | (ulong)ZoneType.Dma << (0x9 * TableShift)
        | (ulong)ZoneType.Movable << (0xa * TableShift)
        | (ulong)ZoneType.Dma32 << (0xc * TableShift);

    /// <summary>
    /// gfp_zone(): the highest zone <paramref name="gfp"/> may be served from on a layout with
    /// <paramref name="zones"/>. Throws <see cref="GfpException"/> for a GFP_ZONE_BAD combination.
    /// May return <see cref="ZoneType.Movable"/> (see remarks); clamp with <see cref="HighestPresent"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ZoneType GfpZone(Gfp gfp, ZoneSet zones)
    {
        int bits = (int)(gfp & ZoneMask);
        if (((ZoneBad >> bits) & 1) != 0 || (zones & ZoneSet.Normal) == 0)
        {
            ThrowBadZone(gfp, zones);
        }

        var zone = (ZoneType)((ZoneTable >> (bits * TableShift)) & 0xf);

        // OPT_ZONE_DMA / OPT_ZONE_DMA32 / OPT_ZONE_HIGHMEM: a zone the layout lacks becomes ZONE_NORMAL.
        if (zone <= ZoneType.HighMem && !zones.Contains(zone))
        {
            zone = ZoneType.Normal;
        }

        return zone;
    }

    /// <summary>
    /// The zone the zonelist walk really starts at for upper bound <paramref name="highest"/>: the highest zone of
    /// <paramref name="zones"/> at or below it. ZONE_NORMAL always qualifies for NORMAL and above.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ZoneType HighestPresent(ZoneType highest, ZoneSet zones)
    {
        // Bits 0..highest of the set, then the top one. Movable/Device (4, 5) cover all four set bits.
        uint upTo = highest >= ZoneType.HighMem ? 0xfu : (2u << (int)highest) - 1;
        uint present = (uint)zones & upTo;
        if (present == 0)
        {
            ThrowNoZone(highest, zones);
        }

        return (ZoneType)(31 - System.Numerics.BitOperations.LeadingZeroCount(present));
    }

    /// <summary>
    /// gfp_migratetype(): the free-list type the pages go on, from the mobility bits: none → Unmovable,
    /// __GFP_MOVABLE → Movable, __GFP_RECLAIMABLE → Reclaimable. Both bits at once would alias MIGRATE_HIGHATOMIC,
    /// which Linux VM_WARNs about; kmem throws <see cref="GfpException"/>. (Linux's
    /// page_group_by_mobility_disabled, for machines too small to group, is not modelled.)
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static MigrateType MigrateTypeOf(Gfp gfp)
    {
        uint bits = (uint)(gfp & MobilityMask) >> MobilityShift;
        if (bits == ((uint)MobilityMask >> MobilityShift))
        {
            ThrowBothMobilityBits(gfp);
        }

        return (MigrateType)bits;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBadZone(Gfp gfp, ZoneSet zones)
    {
        if ((zones & ZoneSet.Normal) == 0)
        {
            throw new ArgumentException($"Zone set {zones} has no Normal zone; every layout has ZONE_NORMAL.", nameof(zones));
        }

        Gfp zoneBits = gfp & ZoneMask;
        string message =
            $"gfp_zone(): invalid zone modifiers {GfpFormat.Format(zoneBits)} in gfp_flags={GfpFormat.Format(gfp)}: "
            + "at most one of __GFP_DMA, __GFP_DMA32, __GFP_HIGHMEM may be set.";
        string report =
            $"VM_BUG_ON((GFP_ZONE_BAD >> bit) & 1) in gfp_zone(): bit=0x{(uint)zoneBits:x}, mode:{GfpFormat.FormatMode(gfp)}\n"
            + "kernel BUG at include/linux/gfp.h (gfp_zone)!";
        throw new GfpException(gfp, message, report);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowNoZone(ZoneType highest, ZoneSet zones) =>
        throw new ArgumentException($"Zone set {zones} has no zone at or below {highest}.", nameof(zones));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowBothMobilityBits(Gfp gfp)
    {
        string message =
            $"gfp_migratetype(): gfp_flags={GfpFormat.Format(gfp)} sets both __GFP_MOVABLE and __GFP_RECLAIMABLE.";
        string report =
            $"WARNING: VM_WARN_ON((gfp_flags & GFP_MOVABLE_MASK) == GFP_MOVABLE_MASK) in gfp_migratetype(), mode:{GfpFormat.FormatMode(gfp)}";
        throw new GfpException(gfp, message, report);
    }
}
