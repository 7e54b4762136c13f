namespace Kmem.Tracing;

/// <summary>
/// The kmem-related ftrace events kmem reads from real traces and emits itself.
/// Names follow the Linux tracepoints (include/trace/events/kmem.h, vmalloc.h, vmscan.h, oom.h).
/// </summary>
public enum EventKind : byte
{
    /// <summary>Not an event (default value of <see cref="TraceEvent"/>).</summary>
    None = 0,

    // --- kmem:* slab events (also the pre-6.x kmalloc_node / kmem_cache_alloc_node, folded in).
    /// <summary>kmem:kmalloc — call_site, ptr, bytes_req, bytes_alloc, gfp_flags, node, accounted.</summary>
    Kmalloc,
    /// <summary>kmem:kfree — call_site, ptr (0 for kfree(NULL)).</summary>
    Kfree,
    /// <summary>kmem:kmem_cache_alloc — call_site, ptr, name, bytes_req, bytes_alloc, gfp_flags, node, accounted.</summary>
    KmemCacheAlloc,
    /// <summary>kmem:kmem_cache_free — call_site, ptr, name.</summary>
    KmemCacheFree,

    // --- kmem:* page allocator events.
    /// <summary>kmem:mm_page_alloc — page, pfn, order, migratetype, gfp_flags.</summary>
    MmPageAlloc,
    /// <summary>kmem:mm_page_free — page, pfn, order. Emitted for every freed page block, batched or not.</summary>
    MmPageFree,
    /// <summary>kmem:mm_page_free_batched — page, pfn, order=0. Linux 6.x emits it in addition to mm_page_free.</summary>
    MmPageFreeBatched,

    // --- vmalloc:*.
    /// <summary>vmalloc:alloc_vmap_area — va_start, size, align, vstart, vend, failed.</summary>
    AllocVmapArea,
    /// <summary>vmalloc:free_vmap_area_noflush — va_start, nr_lazy, nr_lazy_max.</summary>
    FreeVmapAreaNoflush,
    /// <summary>vmalloc:purge_vmap_area_lazy — start, end, num_purged.</summary>
    PurgeVmapAreaLazy,

    // --- Events the real traces do not contain but kmem emits itself.
    /// <summary>kmem:mm_page_alloc_zone_locked — page, pfn, order, migratetype, percpu_refill.</summary>
    MmPageAllocZoneLocked,
    /// <summary>kmem:mm_page_alloc_extfrag — page, pfn, alloc/fallback order and migratetype.</summary>
    MmPageAllocExtfrag,
    /// <summary>vmscan:mm_vmscan_kswapd_wake — nid, order.</summary>
    MmVmscanKswapdWake,
    /// <summary>vmscan:mm_vmscan_kswapd_sleep — nid.</summary>
    MmVmscanKswapdSleep,
    /// <summary>vmscan:mm_vmscan_direct_reclaim_begin — order, gfp_flags.</summary>
    MmVmscanDirectReclaimBegin,
    /// <summary>vmscan:mm_vmscan_direct_reclaim_end — nr_reclaimed.</summary>
    MmVmscanDirectReclaimEnd,
    /// <summary>oom:mark_victim — pid (of the task chosen by the OOM killer), and in 6.x its comm and sizes.</summary>
    MarkVictim,
}

/// <summary>Helpers over <see cref="EventKind"/>.</summary>
public static class EventKindExtensions
{
    /// <summary>Number of values in <see cref="EventKind"/> (for arrays indexed by kind).</summary>
    public const int Count = (int)EventKind.MarkVictim + 1;

    /// <summary>The tracepoint name as ftrace prints it (<c>kmem_cache_alloc</c>).</summary>
    public static string TraceName(this EventKind kind) => kind switch
    {
        EventKind.Kmalloc => "kmalloc",
        EventKind.Kfree => "kfree",
        EventKind.KmemCacheAlloc => "kmem_cache_alloc",
        EventKind.KmemCacheFree => "kmem_cache_free",
        EventKind.MmPageAlloc => "mm_page_alloc",
        EventKind.MmPageFree => "mm_page_free",
        EventKind.MmPageFreeBatched => "mm_page_free_batched",
        EventKind.AllocVmapArea => "alloc_vmap_area",
        EventKind.FreeVmapAreaNoflush => "free_vmap_area_noflush",
        EventKind.PurgeVmapAreaLazy => "purge_vmap_area_lazy",
        EventKind.MmPageAllocZoneLocked => "mm_page_alloc_zone_locked",
        EventKind.MmPageAllocExtfrag => "mm_page_alloc_extfrag",
        EventKind.MmVmscanKswapdWake => "mm_vmscan_kswapd_wake",
        EventKind.MmVmscanKswapdSleep => "mm_vmscan_kswapd_sleep",
        EventKind.MmVmscanDirectReclaimBegin => "mm_vmscan_direct_reclaim_begin",
        EventKind.MmVmscanDirectReclaimEnd => "mm_vmscan_direct_reclaim_end",
        EventKind.MarkVictim => "mark_victim",
        _ => "none",
    };

    /// <summary>kmalloc or kmem_cache_alloc.</summary>
    public static bool IsSlabAlloc(this EventKind kind) => kind is EventKind.Kmalloc or EventKind.KmemCacheAlloc;

    /// <summary>kfree or kmem_cache_free.</summary>
    public static bool IsSlabFree(this EventKind kind) => kind is EventKind.Kfree or EventKind.KmemCacheFree;
}
