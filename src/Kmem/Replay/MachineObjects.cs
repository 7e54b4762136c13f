using Kmem.Slab;

namespace Kmem.Replay;

/// <summary>
/// <see cref="IReplayObjects"/> over a booted machine's slab allocator (<see cref="Machine.Slab"/>): kmalloc/kfree,
/// and kmem_cache_create/alloc/free with kmem_cache_create's merging, as Linux does without slab_nomerge (two trace
/// caches of one size may share a kmem cache, as they share one in Linux), and vmalloc/vfree on
/// <see cref="Machine.Vmalloc"/>.
/// </summary>
public sealed unsafe class MachineObjects : IReplayObjects
{
    private readonly SlabAllocator _slab;
    private readonly Vmalloc.VmallocAllocator _vmalloc;
    private readonly List<KmemCache> _caches = [];

    /// <summary>Adapts <paramref name="machine"/>'s allocators.</summary>
    public MachineObjects(Machine machine)
    {
        ArgumentNullException.ThrowIfNull(machine);
        _slab = machine.Slab;
        _vmalloc = machine.Vmalloc;
    }

    /// <inheritdoc/>
    public nint Kmalloc(long size, Gfp gfp) => (nint)_slab.Kmalloc((nuint)size, gfp);

    /// <inheritdoc/>
    public long Ksize(nint p) => (long)_slab.Ksize((void*)p);

    /// <inheritdoc/>
    public void Kfree(nint p) => _slab.Kfree((void*)p);

    /// <inheritdoc/>
    public int CreateCache(string name, int objectSize)
    {
        KmemCache? c = _slab.CreateCache(name, objectSize);
        if (c == null) return -1;
        _caches.Add(c);
        return _caches.Count - 1;
    }

    /// <inheritdoc/>
    public int CacheSlotSize(int cache) => _caches[cache].Size;

    /// <inheritdoc/>
    public nint CacheAlloc(int cache, Gfp gfp) => (nint)_caches[cache].Alloc(gfp);

    /// <inheritdoc/>
    public void CacheFree(int cache, nint p) => _caches[cache].Free((void*)p);

    /// <inheritdoc/>
    public bool HasVmalloc => true;

    /// <inheritdoc/>
    public nint Vmalloc(long size, Gfp gfp) => (nint)_vmalloc.VmallocGfp((nuint)size, gfp, "replay");

    /// <inheritdoc/>
    public nint VmallocAligned(long size, ulong align, Gfp gfp) => (nint)_vmalloc.VmallocNode((nuint)size, align, gfp, "replay");

    /// <inheritdoc/>
    public void Vfree(nint p) => _vmalloc.Vfree((void*)p);

    /// <inheritdoc/>
    public IReadOnlyList<SlabUsage> SlabUsage()
    {
        var rows = new List<SlabUsage>();
        foreach (KmemCache c in _slab.Caches)
        {
            var (active, total, _, slabs) = c.SlabInfo();
            rows.Add(new SlabUsage(c.Name, c.Size, active, total, slabs, 1 << c.Order));
        }
        return rows;
    }
}
