namespace Kmem.Replay;

/// <summary>
/// The object allocators a replay drives: kmalloc, named caches and vmalloc. A seam so the engine does not depend
/// on how a machine exposes them (<see cref="MachineObjects"/> adapts a booted <see cref="Machine"/>; tests may pass a
/// fake). Pointers are kmem addresses as <see cref="nint"/>; 0 means the allocation failed. Every method may throw a
/// <see cref="KmemException"/> for a bad operation: the engine counts it as an allocator error and goes on.
/// </summary>
public interface IReplayObjects
{
    /// <summary>kmalloc(size, gfp).</summary>
    nint Kmalloc(long size, Gfp gfp);

    /// <summary>ksize(p): the usable size kmem really gave (Linux's bytes_alloc).</summary>
    long Ksize(nint p);

    /// <summary>kfree(p).</summary>
    void Kfree(nint p);

    /// <summary>kmem_cache_create(name, objectSize): a handle (&gt;= 0) or -1 if the cache cannot be created.</summary>
    int CreateCache(string name, int objectSize);

    /// <summary>The slot size of a cache (Linux's s-&gt;size, what kmem_cache_alloc logs as bytes_alloc).</summary>
    int CacheSlotSize(int cache);

    /// <summary>kmem_cache_alloc(cache, gfp).</summary>
    nint CacheAlloc(int cache, Gfp gfp);

    /// <summary>kmem_cache_free(cache, p).</summary>
    void CacheFree(int cache, nint p);

    /// <summary>True when <see cref="Vmalloc"/> and <see cref="Vfree"/> are available.</summary>
    bool HasVmalloc { get; }

    /// <summary>vmalloc(size) with the request's gfp.</summary>
    nint Vmalloc(long size, Gfp gfp);

    /// <summary>__vmalloc_node(size, align, gfp): <see cref="Vmalloc"/> with the area aligned to <paramref name="align"/>
    /// (a power of two; kernel stacks ask THREAD_ALIGN). Implementations without alignment fall back to Vmalloc.</summary>
    nint VmallocAligned(long size, ulong align, Gfp gfp) => Vmalloc(size, gfp);

    /// <summary>vfree(p).</summary>
    void Vfree(nint p);

    /// <summary>Per-cache slab usage now (slabinfo's columns), for the efficiency table.</summary>
    IReadOnlyList<SlabUsage> SlabUsage();
}

/// <summary>One cache's slabinfo columns.</summary>
/// <param name="Name">Cache name.</param>
/// <param name="ObjectSize">Bytes per object slot.</param>
/// <param name="ActiveObjects">Objects in use.</param>
/// <param name="TotalObjects">Object slots in all slabs.</param>
/// <param name="Slabs">Slabs.</param>
/// <param name="PagesPerSlab">Pages in one slab (2^order).</param>
public readonly record struct SlabUsage(string Name, int ObjectSize, long ActiveObjects, long TotalObjects, long Slabs, int PagesPerSlab)
{
    /// <summary>Active / total objects, in percent (100 when the cache has no slabs).</summary>
    public double EfficiencyPercent => TotalObjects == 0 ? 100 : 100.0 * ActiveObjects / TotalObjects;
}
