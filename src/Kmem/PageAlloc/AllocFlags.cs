namespace Kmem;

/// <summary>
/// Linux's internal ALLOC_* flags (mm/internal.h): which watermark an attempt must pass and which reserves it may use.
/// The values of <see cref="MinReserve"/> and <see cref="Kswapd"/> equal __GFP_HIGH and __GFP_KSWAPD_RECLAIM, so that
/// gfp_to_alloc_flags can copy those bits straight across, as Linux does.
/// </summary>
[Flags]
public enum AllocFlags
{
    WmarkMin = 0,
    WmarkLow = 1,
    WmarkHigh = 2,
    NoWatermarks = 0x04,
    WmarkMask = NoWatermarks - 1,
    /// <summary>ALLOC_OOM: an OOM victim; may take half the remaining min reserve.</summary>
    Oom = 0x08,
    /// <summary>ALLOC_NON_BLOCK: the caller cannot sleep (no direct reclaim) and did not refuse reserves.</summary>
    NonBlock = 0x10,
    /// <summary>ALLOC_MIN_RESERVE (= __GFP_HIGH): may dip to half of the min watermark.</summary>
    MinReserve = 0x20,
    Cpuset = 0x40,
    Cma = 0x80,
    NoFragment = 0x100,
    /// <summary>ALLOC_HIGHATOMIC: may use the MIGRATE_HIGHATOMIC reserve.</summary>
    HighAtomic = 0x200,
    /// <summary>ALLOC_KSWAPD (= __GFP_KSWAPD_RECLAIM).</summary>
    Kswapd = 0x800,
    /// <summary>ALLOC_RESERVES: any of the reserve-granting flags.</summary>
    Reserves = NonBlock | MinReserve | HighAtomic | Oom,
}
