namespace Kmem.PageAlloc;

/// <summary>
/// The seam where __alloc_pages_slowpath's reclaim half plugs in (kswapd, direct compaction, direct reclaim, OOM,
/// the __GFP_NOFAIL loop). Without one, an allocation that fails the fast path and the reserve retry simply fails,
/// with a "page allocation failure" report unless __GFP_NOWARN.
/// </summary>
public unsafe interface IAllocSlowPath
{
    /// <summary>Wake kswapd for the node (called when __GFP_KSWAPD_RECLAIM is set and the fast path failed).</summary>
    void WakeKswapd(Gfp gfp, int order, ZoneType highestZone);

    /// <summary>
    /// The blocking part of the slow path: called after the fast path and the reserve retry failed, for callers that
    /// may sleep (__GFP_DIRECT_RECLAIM) or that must not fail (__GFP_NOFAIL). Returns a prepared page or null.
    /// <paramref name="retry"/> runs get_page_from_freelist with the given alloc flags and prepares the page.
    /// </summary>
    PageFrame* Allocate(Gfp gfp, int order, ZoneType highestZone, AllocFlags allocFlags, PageAllocator.RetryAllocation retry);
}
