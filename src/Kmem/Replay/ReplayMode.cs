namespace Kmem.Replay;

/// <summary>
/// Which events of a Linux trace a replay drives kmem with. Linux's slab allocator gets its slabs from the page
/// allocator, and in 6.x every one of those shows up as mm_page_alloc (alloc_slab_page → alloc_frozen_pages →
/// __alloc_frozen_pages_noprof, which logs the tracepoint); kmalloc_large's compound pages do too. kmem's own slab
/// allocator takes its slabs from kmem's page allocator when it replays the object events, so replaying those page
/// events as well would count the memory twice. The modes choose.
/// </summary>
public enum ReplayMode
{
    /// <summary>
    /// Object events (kmalloc/kfree, kmem_cache_alloc/free, vmalloc) and the page events that are not the object
    /// allocators' own: a page allocation whose gfp is a slab page's (<see cref="ReplayEngine.IsSlabPageGfp"/>) is
    /// skipped, as is the compound page right before a kmalloc larger than KMALLOC_MAX_CACHE_SIZE on the same CPU
    /// (kmalloc_large), and their frees with them. The default.
    /// </summary>
    Objects,

    /// <summary>Only page events (mm_page_alloc/mm_page_free), every one: the page allocator sees what Linux's saw.</summary>
    Pages,

    /// <summary>Everything, counting slab memory twice (once as objects, once as pages). For stress, not fidelity.</summary>
    All,
}
