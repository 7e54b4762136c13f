using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// How far below the min watermark an allocation may go: the reserve part of Linux's alloc_flags, as computed by
/// gfp_to_alloc_flags() (mm/page_alloc.c) from the GFP mask alone. Task-dependent boosts (realtime tasks get
/// ALLOC_MIN_RESERVE; PF_MEMALLOC tasks and OOM victims get ALLOC_NO_WATERMARKS / ALLOC_OOM) are decided by the
/// caller, which knows the context.
/// </summary>
public enum GfpReserve : byte
{
    /// <summary>The full min watermark; pages in MIGRATE_HIGHATOMIC pageblocks do not count as free. Blocking callers.</summary>
    None = 0,

    /// <summary>
    /// ALLOC_NON_BLOCK: cannot sleep (no __GFP_DIRECT_RECLAIM, no __GFP_NOMEMALLOC) but no __GFP_HIGH, e.g.
    /// GFP_NOWAIT. The min watermark is not lowered, but high-atomic reserved pages count as free.
    /// </summary>
    NonBlocking = 1,

    /// <summary>
    /// ALLOC_MIN_RESERVE: __GFP_HIGH on a caller that can sleep (or that passed __GFP_NOMEMALLOC).
    /// The watermark drops to min - min/2.
    /// </summary>
    High = 2,

    /// <summary>
    /// ALLOC_MIN_RESERVE | ALLOC_NON_BLOCK: __GFP_HIGH and cannot sleep, e.g. GFP_ATOMIC. The watermark drops to
    /// m - m/4 with m = min - min/2 (about 3/8 of min), and order &gt; 0 requests may take MIGRATE_HIGHATOMIC pageblocks.
    /// </summary>
    Atomic = 3,
}

/// <summary>
/// The GFP predicates the allocators test on every call (include/linux/gfp.h and gfp_to_alloc_flags()).
/// Each is one or two bit tests and is inlined.
/// </summary>
public static class GfpExt
{
    /// <summary>
    /// gfpflags_allow_blocking(): the caller may sleep, so the allocator may enter direct reclaim and compaction,
    /// and wait. False for GFP_ATOMIC, GFP_NOWAIT and GFP_TRANSHUGE_LIGHT.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool AllowsBlocking(this Gfp gfp) => (gfp & Gfp.DirectReclaim) != 0;

    /// <summary>
    /// The opposite of <see cref="AllowsBlocking"/>: the caller may be in interrupt context or hold a spinlock,
    /// so the allocation must not sleep. These callers take the non-blocking reserves (<see cref="Reserve"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsAtomicLike(this Gfp gfp) => (gfp & Gfp.DirectReclaim) == 0;

    /// <summary>
    /// gfpflags_allow_spinning(): at least one reclaim bit is set, so the caller may spin on (not sleep on) the
    /// zone lock. Only alloc_pages_nolock() passes neither bit; such callers may only trylock.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool AllowsSpinning(this Gfp gfp) => (gfp & Gfp.Reclaim) != 0;

    /// <summary>
    /// __GFP_IO: reclaim on this caller's behalf may start physical I/O (swap-out, writeback), and compaction is
    /// allowed (gfp_compaction_allowed()). Meaningful only when <see cref="AllowsBlocking"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool MayIo(this Gfp gfp) => (gfp & Gfp.Io) != 0;

    /// <summary>
    /// __GFP_FS: reclaim may call into filesystems (writeback through the FS, FS shrinkers). Cleared (GFP_NOFS) by
    /// callers that hold filesystem locks, to avoid deadlocking on them. Meaningful only when <see cref="AllowsBlocking"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool MayFs(this Gfp gfp) => (gfp & Gfp.Fs) != 0;

    /// <summary>
    /// __GFP_KSWAPD_RECLAIM (ALLOC_KSWAPD): wake kswapd when a zone is found below its low watermark, and when a
    /// boosted watermark is cleared. False for the THP types, which fall back to small pages instead.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool ShouldWakeKswapd(this Gfp gfp) => (gfp & Gfp.KswapdReclaim) != 0;

    /// <summary>
    /// The reserve class the watermark check applies (gfp_to_alloc_flags()): __GFP_HIGH gives ALLOC_MIN_RESERVE;
    /// no __GFP_DIRECT_RECLAIM and no __GFP_NOMEMALLOC gives ALLOC_NON_BLOCK.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static GfpReserve Reserve(this Gfp gfp)
    {
        int high = (gfp & Gfp.High) != 0 ? (int)GfpReserve.High : 0;
        int nonBlock = (gfp & (Gfp.DirectReclaim | Gfp.NoMemAlloc)) == 0 ? (int)GfpReserve.NonBlocking : 0;
        return (GfpReserve)(high | nonBlock);
    }

    /// <summary>
    /// ALLOC_HIGHATOMIC: an order &gt; 0 request of the <see cref="GfpReserve.Atomic"/> class may take pages from
    /// MIGRATE_HIGHATOMIC pageblocks, and may reserve such a pageblock when it succeeds from the normal lists.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool MayUseHighAtomic(this Gfp gfp, int order) => order > 0 && gfp.Reserve() == GfpReserve.Atomic;

    /// <summary>
    /// The mask part of __gfp_pfmemalloc_flags(): __GFP_MEMALLOC without __GFP_NOMEMALLOC may ignore watermarks
    /// altogether (ALLOC_NO_WATERMARKS). Linux grants this only in the slow path, after a normal attempt failed.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool MayIgnoreWatermarks(this Gfp gfp) => (gfp & (Gfp.MemAlloc | Gfp.NoMemAlloc)) == Gfp.MemAlloc;

    /// <summary>
    /// The watermark __zone_watermark_ok() compares against for a caller of class <paramref name="reserve"/>,
    /// given the zone's <paramref name="mark"/> (usually WMARK_MIN) in pages. Integer halving as in Linux.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long ReducedMark(this GfpReserve reserve, long mark)
    {
        if ((reserve & GfpReserve.High) == 0)
        {
            return mark;
        }

        long min = mark - mark / 2;
        if (reserve == GfpReserve.Atomic)
        {
            min -= min / 4;
        }

        return min;
    }

    /// <summary>
    /// True when pages in MIGRATE_HIGHATOMIC pageblocks count as free for this caller (any ALLOC_RESERVES bit);
    /// callers of class <see cref="GfpReserve.None"/> see them subtracted from the zone's free count.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool CountsHighAtomicAsFree(this GfpReserve reserve) => reserve != GfpReserve.None;
}
