using Kmem.Diagnostics;
using Kmem.Reclaim;
using Kmem.Slab;

namespace Kmem.Scenario;

/// <summary>
/// A dentry-cache-like reclaimable slab cache (SLAB_RECLAIM_ACCOUNT, so its pages count as SReclaimable) whose unused
/// objects sit on an LRU and are given back through a filesystem shrinker (skipped without __GFP_FS), as
/// dcache/icache do through super_cache_scan. Objects are freed oldest first; empty slabs then go back to the page
/// allocator with kmem_cache_shrink, and the pages freed are reported to reclaim (reclaim_state).
/// </summary>
/// <remarks>
/// The shrinker frees into the slab allocator from inside reclaim, possibly from inside a GFP_KERNEL allocation of this
/// same cache whose new slab entered direct reclaim: that is safe because the slab allocator holds no lock across the
/// page allocator (SlabAllocator design statement, section 4; SlabReclaimTests).
/// </remarks>
public sealed unsafe class DentryCache : IDisposable
{
    private readonly Machine _m;
    private readonly Lock _lock = new();
    private readonly LinkedList<nint> _lru = new();

    public KmemCache Cache { get; }
    public Shrinker Shrinker { get; }
    public long Count { get { lock (_lock) return _lru.Count; } }

    public DentryCache(Machine m, string name = "dentry", int objectSize = 192)
    {
        _m = m;
        Cache = m.Slab.CreateCache(name, objectSize, 0, SlabFlags.ReclaimAccount | SlabFlags.HwcacheAlign)
                ?? throw new KmemException($"kmem_cache_create({name}) failed");
        Shrinker = m.Reclaim.RegisterShrinker(new Shrinker($"super_cache_scan:{name}", _ => Count, Scan, ShrinkerFlags.NeedsFs));
    }

    /// <summary>d_alloc: <paramref name="n"/> new objects (GFP_KERNEL), added to the LRU as unused. Returns how many were made.</summary>
    public long Populate(long n, Gfp gfp = Gfp.Kernel)
    {
        long made = 0;
        for (; made < n; made++)
        {
            void* o = Cache.Alloc(gfp);
            if (o == null) break;
            lock (_lock) _lru.AddLast((nint)o);
        }
        return made;
    }

    private long Scan(ShrinkControl sc)
    {
        long before = _m.Stat[VmItem.NrSlabReclaimable];
        long freed = 0;
        while (freed < sc.NrToScan)
        {
            nint o;
            lock (_lock)
            {
                if (_lru.First == null) break;
                o = _lru.First.Value;
                _lru.RemoveFirst();
            }
            Cache.Free((void*)o);
            freed++;
        }
        Cache.Shrink();
        sc.PagesFreed += Math.Max(0, before - _m.Stat[VmItem.NrSlabReclaimable]);
        return freed;
    }

    public void Dispose()
    {
        _m.Reclaim.UnregisterShrinker(Shrinker);
        lock (_lock)
        {
            foreach (var o in _lru) Cache.Free((void*)o);
            _lru.Clear();
        }
        _m.Slab.DestroyCache(Cache);
    }
}
