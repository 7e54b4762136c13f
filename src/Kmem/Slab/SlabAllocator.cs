using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Kmem.Diagnostics;
using Kmem.PageAlloc;
using Kmem.Physical;

namespace Kmem.Slab;

/// <summary>
/// The slab allocator: SLUB object caches (kmem_cache_*) and the kmalloc family on top of the page allocator.
/// </summary>
/// <remarks>
/// 1. Concepts. A cache hands out objects of one size. Its memory comes in slabs: compound pages of 2^order pages
///    (allocated with __GFP_COMP, so any address inside finds the head through compound_head) cut into equal slots.
///    A free object stores the link to the next free object inside itself, at the free pointer offset
///    (calculate_sizes: in the middle of the object, or after it when a constructor, poisoning or SLAB_TYPESAFE_BY_RCU
///    needs the object intact). The link is hardened as CONFIG_SLAB_FREELIST_HARDENED: ptr ^ s->random ^
///    swab(&amp;link). Constructors run once per object when its slab is created, never per allocation.
/// 2. Data structures. <see cref="KmemCache"/>: layout (<see cref="SlabGeometry"/>), per-CPU
///    <c>KmemCacheCpu</c> (native, 64 bytes each: lockless-in-effect freelist, CPU slab, CPU partial list) and one
///    node (list_lock, partial list, nr_partial, nr_slabs, total_objects). In front of the CPU layer, per thread:
///    a <see cref="Sheaf"/> (up to 32 free objects, Linux 6.18's slab_sheaf owned by a thread instead of a CPU),
///    inline in the thread's <see cref="SheafTable"/> at the cache's sheaf offset, fixed by its global sheaf slot
///    (<see cref="ThreadSheaves"/>). The slab descriptor is the head
///    <see cref="PageFrame"/>: <c>Flags</c> has Slab; <c>SlabCache</c> = cache id (from 1; 0 on every page that is not a slab head, so the
///    free paths test it alone); <c>Freelist</c> = first free object
///    not owned by a CPU; <c>Inuse</c>, <c>Objects</c>, <c>Frozen</c>; <c>Next/Prev</c> = node partial links (PFNs) or
///    the CPU partial chain (Next only); <c>Mapping</c> = state bits (OnNodePartial, OnCpuPartial, RcuPending | stamp);
///    <c>Private</c> = slab_lock word; <c>MapCount</c> = the cache's sheaf offset (slot 0's for none), where Linux keeps the
///    slab page_type, so kfree finds the thread's sheaf from the page without loading the cache first.
/// 3. Slab states (flag combinations, asserted by <see cref="KmemCache.CheckInvariants"/>):
///    CPU slab: Frozen, on no list, c->slab == pfn; objects split between c->freelist (CPU only) and slab->freelist
///    (remote frees); Inuse counts c->freelist objects as in use.
///    CPU partial: !Frozen, OnCpuPartial, chained from c->partial; has free objects (it may become empty).
///    Node partial: !Frozen, OnNodePartial, on the doubly linked list; 0 &lt; free objects; empty only while
///    nr_partial &lt; min_partial. Full: !Frozen, on no list, Freelist == 0. RCU-pending: RcuPending, on the cache's
///    deferred list, no longer counted in nr_slabs.
/// 4. Locking, in this order (a path may take a later lock while holding an earlier one, never the reverse):
///    a. slab_mutex (<see cref="SlabAllocator"/>, global): the cache table, names, aliases, refcounts.
///    b. per-CPU lock <c>c->Lock</c> (a try-lock: the fast paths CAS it once; two threads sharing a CPU index
///       serialise on it, the loser spins or, when freeing, takes the slab path): c->freelist, c->slab, c->partial,
///       c->partial_slabs, the counters. Only the OnAnyFreelist check holds several, taken in CPU order.
///    c. node list_lock (per cache): partial list, nr_partial, OnNodePartial/OnCpuPartial bits, the RCU list.
///    d. slab_lock (per slab): slab->freelist, inuse, frozen. This stands for SLUB's cmpxchg_double on
///       (freelist, counters): a remote free takes only this lock unless the slab changes list (it was full, or it
///       becomes empty), in which case it takes list_lock first and re-reads the slab.
///    The page allocator (AllocPages and FreePages, hence its zone and pcp locks and, for a sleeping gfp, direct
///    reclaim with its shrinkers) is only called with none of b, c, d held. With a sleeping gfp a shrinker may free
///    objects into, or shrink, the very cache that is allocating, on the same thread and CPU index, so holding any of
///    them across AllocPages would self-deadlock (and would stall every thread sharing that CPU index). As SLUB's
///    ___slab_alloc → new_slab: the refill drops the CPU lock, allocates and builds the slab, re-takes the CPU lock
///    (possibly another CPU's) and, when a CPU slab appeared meanwhile, detaches it under the lock and deactivates it
///    without it (retry_load_slab), then installs the new slab. Likewise every slab that becomes free (deactivate_slab,
///    __put_partials, __slab_free, shrink) is unlinked under the locks and handed to FreePages after they are dropped;
///    no sheaf window is open across either call. Tested by SlabReclaimTests (a shrinker freeing into the allocating
///    cache; a probe on the same CPU index while AllocPages runs).
///    The sheaf registry lock (<c>ThreadSheaves.s_lock</c>, global) sits between a and b: slot registration, thread
///    tables, every drain and thread-exit flush (which then take b, c, d and, to free slabs that became empty, the
///    page allocator's free path, which never reclaims; AllocPages is never called under s_lock, so no shrinker
///    runs under it).
/// 5. Fast paths (AggressiveInlining), no atomic instruction on either:
///    alloc = find the thread's sheaf (one [ThreadStatic] load and an add: every thread's table holds
///    <see cref="ThreadSheaves.MaxSlots"/> sheaves inline, and slot 0's, the slot of caches without sheaves, is
///    stopped for good, so there is no bounds or "has sheaves" test and no pointer to chase), open its window, pop,
///    close it, clear the link word. kmalloc's class comes from the size_index span up to 192 bytes (RVA data: a
///    constant size and gfp fold to one load of the cache), from a 1 KiB table above. Free = load the thread's sheaf table
///    first (on Linux a [ThreadStatic] load is a call into the TLS resolver: made before the checks nothing has to
///    survive it, and where an alloc and a free inline into one method the JIT shares one resolver call between them;
///    kfree takes the sheaf offset from the slab's MapCount, kmem_cache_free from the cache), then virt_to_page on
///    cached fields, compound_head, check the cache id (nonzero only on a slab head, so it also tells a slab), check the
///    offset is a slot (a multiply: Lemire's divisibility test), check the link word does not decode to null or an
///    object of this slab (a free object's always does, a live one's never does: the alloc paths clear it), write the encoded null
///    link (so the object looks free while in the sheaf), open the window, push, close it. That link check is the
///    immediate double-free check (SLUB's "object at the head of the freelist" test): it catches a second free of an
///    object sitting in any sheaf or on any freelist, confirmed in the cold path by draining the sheaves and walking
///    the freelists; __slab_free's head == prior test stays as a second line.
///    Sheaf ownership (what replaces preempt_disable): only the owning thread changes Size/Objects, and only inside
///    a window: <c>Busy = 1; n = Size; if ((uint)(n - 1) &lt; cap) { ...; Size = n', Busy = 0 }</c>. The stop flag is
///    the sign bit of Size (<see cref="Sheaf.StopBit"/>), so that one unsigned compare rejects a stopped sheaf with an
///    empty (alloc) or full (free) one; the close is one 8-byte store of Size and Busy together
///    (<see cref="Sheaf.Close"/>; plain stores; no locks, calls, waits or throws inside; on Cascade Lake, with one
///    store port, each store saved on these paths shows). A drainer (flush_all, shrink, destroy, the double-free
///    confirmation; LiveObjects readers need none) holds the registry lock, ORs the stop bit into every non-empty
///    sheaf of the cache, issues <see cref="Interlocked.MemoryBarrierProcessWide"/> (sys_membarrier: every running
///    thread passes a full barrier), waits for Busy == 0 and checks the bit survived: a window that had read Size
///    before the bit was set closes by writing a size without it, and then the drainer sets it again and retries
///    (<c>ThreadSheaves.ClaimRetries</c> counts these). Once the bit survives a Busy == 0 the drainer owns the sheaf:
///    it empties it into the CPU layer and writes Size = 0, which also clears the bit. Invariant: after the barrier
///    an owner either has its Busy = 1 visible to the drainer (the drainer waits) or reads the bit (it takes the slow
///    path without touching the sheaf), so the owner and a drainer never both touch a sheaf (asymmetric Dekker). A
///    race would show as an object in two places: the stress tests tag objects and check nobody overwrote them, and
///    SheafTests races drains against an owner until a retry has happened.
///    Slow paths (NoInlining): an empty sheaf takes half a sheaf (16) from the CPU layer in one CPU-lock round trip;
///    a full one gives its older half back the same way (CPU-slab objects onto c->freelist, others to __slab_free as
///    one chain per slab). So the CPU lock (one CAS) is taken once per 16 operations instead of on every one. Debug
///    caches (red zone, poison, store user) have no sheaves: their hooks run on the CPU path as before.
///    Thread exit: a thread's table is owned by a finalizable object rooted only by the thread's [ThreadStatic];
///    after the thread exits a GC finalizes it and the objects go back to their caches through the CPU layer.
///    Memory a thread may hold per cache: 32 objects up to 256 bytes, 16 up to 1 KiB, 8 up to 4 KiB, 4 above (a
///    guess bounding it to 8-32 KiB). Sheaf objects count as in use in slabinfo (as CPU freelists do);
///    LiveObjects subtracts them.
///    Everything else is NoInlining: refill (remote frees, CPU partial, node partial, new slab), __slab_free, reports.
/// 6. Bad frees (kfree/kmem_cache_free of a pointer outside the direct map, into the middle of an object, of an object
///    already free or never allocated, of a page that is not a kmalloc allocation, to the wrong cache) are detected
///    before any list or freelist is written: a report in SLUB's format (BUG cache: reason, Slab ..., Object 0x.. @offset=N)
///    goes to the kernel log and a <see cref="SlabException"/> is thrown. State is unchanged.
/// 7. Tuning, each as Linux: slub_min_objects = 4 * (fls(nr_cpus) + 1); slub_max_order = PAGE_ALLOC_COSTLY_ORDER = 3;
///    leftover fractions 1/16, 1/8, 1/4, 1/2 then get_order(size) (calculate_order); MAX_OBJS_PER_PAGE 32767;
///    min_partial = clamp(ilog2(size) / 2, MIN_PARTIAL 5, MAX_PARTIAL 10); cpu_partial = 6 / 24 / 52 / 120 objects
///    for size &gt;= PAGE_SIZE / 1024 / 256 / less, cpu_partial_slabs = DIV_ROUND_UP(2 * cpu_partial, objs_per_slab);
///    get_partial_node moves slabs to the CPU partial list until it holds more than cpu_partial_slabs / 2.
///    kmalloc: KMALLOC_MIN_SIZE 8, KMALLOC_MAX_CACHE_SIZE 8192 (KMALLOC_SHIFT_HIGH = PAGE_SHIFT + 1),
///    KMALLOC_MAX_SIZE 4 MiB (MAX_PAGE_ORDER + PAGE_SHIFT), ZERO_SIZE_PTR 16; kmalloc caches are aligned to the
///    largest power of two dividing their size and carry usersize = size (CONFIG_HARDENED_USERCOPY, as Debian), which
///    makes them unmergeable.
/// 8. SLAB_TYPESAFE_BY_RCU: an empty slab is not returned at once: it is stamped with <see cref="Rcu.Stamp"/> and
///    queued; <see cref="Rcu.Poll"/> at the next safe point (a new-slab allocation or a shrink of that cache) frees the
///    slabs whose grace period has passed. <see cref="RcuBarrier"/> waits for all of them.
/// 9. GC-free: after boot no alloc/free path allocates managed memory (per-CPU state and sheaves are native; locks
///    are ints; only reports, cache creation and a thread's first use of the slab allocator, its table owner, allocate).
/// 10. Deviations: one NUMA node; no full list (SLUB keeps none without debugging either); the debug flags lay out
///    and write poison, red zones and tracks, but the checks on free come with the debugging issue; active_objs in
///    slabinfo counts objects on CPU freelists as active, as SLUB does.
/// </remarks>
public sealed unsafe class SlabAllocator : IDisposable
{
    /// <summary>ZERO_SIZE_PTR: what kmalloc(0) returns; dereferencing it faults, freeing it is a no-op.</summary>
    public static readonly void* ZeroSizePtr = (void*)ZeroSizeAddress;
    /// <summary>ZERO_SIZE_PTR as a number: the fast paths compare with a constant, not a static field.</summary>
    internal const nuint ZeroSizeAddress = 16;
    public const int KmallocMinSize = 8;
    public const int KmallocShiftHigh = ArchProfile.PageShift + 1;
    public const int KmallocMaxCacheSize = 1 << KmallocShiftHigh;
    public const long KmallocMaxSize = (long)ArchProfile.PageSize << Zone.MaxOrder;
    /// <summary>kmem's PG_large_kmalloc: page->mapping of a kmalloc_large head.</summary>
    internal const nint LargeKmallocMapping = 0x4c4b4d41;
    private const int MaxCaches = 4096;
    private const int KmallocIndexes = KmallocShiftHigh + 1; // 0 unused, 1 = 96, 2 = 192, 3..13 = 8..8192

    private readonly Machine _machine;
    private readonly Lock _slabMutex = new();
    private readonly KmemCache?[] _byId = new KmemCache?[MaxCaches];
    private readonly List<KmemCache> _caches = new();                // creation order
    private readonly Dictionary<string, KmemCache> _aliases = new(StringComparer.Ordinal);
    private readonly KmemCache[] _kmalloc = new KmemCache[(int)KmallocType.Count * KmallocIndexes];
    private int _nextId = 1;
    // virt_to_page inputs, cached so kfree does pointer arithmetic on fields of this object only.
    private readonly byte* _window;
    private readonly nuint _directBytes;
    private readonly PageFrame* _mapBase;

    public SlabAllocator(Machine machine)
    {
        _machine = machine;
        MemMap = machine.MemMap;
        _window = machine.Physical.WindowBase;
        _directBytes = (nuint)machine.Physical.LowmemPfnEnd * ArchProfile.PageSize;
        _mapBase = machine.MemMap.Base;
        Pages = machine.Pages;
        Stat = machine.Stat;
        CpuCount = machine.CpuCount;
        foreach (KmallocType t in new[] { KmallocType.Normal, KmallocType.Reclaim, KmallocType.Dma, KmallocType.Cgroup })
            for (int i = 1; i < KmallocIndexes; i++)
            {
                int size = KmallocSizeOf(i);
                SlabFlags f = SlabFlags.Kmalloc | t switch
                {
                    KmallocType.Reclaim => SlabFlags.ReclaimAccount,
                    KmallocType.Dma => SlabFlags.CacheDma,
                    KmallocType.Cgroup => SlabFlags.Account,
                    _ => 0,
                };
                // create_boot_cache: kmalloc caches are aligned to the largest power of two dividing the size.
                int align = Math.Max(SlabGeometry.ArchSlabMinAlign, size & -size);
                _kmalloc[(int)t * KmallocIndexes + i] = CreateCacheLocked(KmallocName(t, size), size, align, f, null, userSize: size)!;
            }
    }

    internal MemMap MemMap { get; }
    internal Machine Machine => _machine;
    internal byte* WindowBase => _machine.Physical.WindowBase;
    /// <summary>Bytes of the direct map: virt_to_page is valid for WindowBase + [0, this).</summary>
    internal nuint DirectMapBytes => (nuint)_machine.Physical.LowmemPfnEnd * ArchProfile.PageSize;
    internal PageAllocator Pages { get; }
    internal VmStat Stat { get; }
    public int CpuCount { get; }
    public Rcu Rcu { get; } = new();

    /// <summary>Every real cache (aliases excluded), in creation order.</summary>
    public IReadOnlyList<KmemCache> Caches
    {
        get { lock (_slabMutex) return _caches.ToList(); }
    }

    /// <summary>Alias name → the cache it was merged into (what /sys/kernel/slab shows as symlinks).</summary>
    public IReadOnlyDictionary<string, KmemCache> Aliases
    {
        get { lock (_slabMutex) return new Dictionary<string, KmemCache>(_aliases); }
    }

    /// <summary>A cache by name (real or alias), or null.</summary>
    public KmemCache? FindCache(string name)
    {
        lock (_slabMutex)
        {
            foreach (var c in _caches) if (c.Name == name) return c;
            return _aliases.GetValueOrDefault(name);
        }
    }

    // =====================================================================================================
    // Object caches
    // =====================================================================================================

    /// <summary>
    /// kmem_cache_create(name, size, align, flags, ctor). Returns the cache (an existing one when the request merges
    /// into it: see <see cref="KmemCache.Aliases"/>), or null on bad arguments; with SLAB_PANIC a failure throws.
    /// </summary>
    public KmemCache? CreateCache(string name, int size, int align = 0, SlabFlags flags = 0, Action<nint>? ctor = null)
    {
        lock (_slabMutex)
        {
            string? err = name is null or "" ? "no name"
                : size <= 0 || size > KmallocMaxSize ? $"size {size} out of range"
                : align < 0 || (align & (align - 1)) != 0 ? $"align {align} is not a power of two"
                : (flags & SlabFlags.Kmalloc) != 0 ? "SLAB_KMALLOC is internal" : null;
            if (err == null)
            {
                var merged = FindMergeable(size, align, flags, ctor);
                if (merged != null)
                {
                    merged.Refcount++;
                    merged.ObjectSize = Math.Max(merged.ObjectSize, size);
                    merged.Inuse = Math.Max(merged.Inuse, SlabGeometry.AlignUp(size, SlabGeometry.PointerSize));
                    merged.Aliases.Add(name!);
                    _aliases[name!] = merged;
                    return merged;
                }
                var s = CreateCacheLocked(name!, size, align, flags, ctor, 0);
                if (s != null) return s;
                err = "no slab order fits";
            }
            string text = (flags & SlabFlags.Panic) != 0
                ? $"Kernel panic - not syncing: kmem_cache_create: Failed to create slab '{name}'. Error -22"
                : $"kmem_cache_create({name}) failed with error -22 ({err})";
            _machine.Log.Write((flags & SlabFlags.Panic) != 0 ? LogLevel.Emerg : LogLevel.Warning, text);
            if ((flags & SlabFlags.Panic) != 0) throw new SlabException(text, text);
            return null;
        }
    }

    private KmemCache? CreateCacheLocked(string name, int size, int align, SlabFlags flags, Action<nint>? ctor, int userSize)
    {
        var g = SlabGeometry.Compute(size, align, flags, ctor != null, CpuCount);
        if (g == null) return null;
        int id = _nextId;
        while (_byId[id] != null) id = id % (MaxCaches - 1) + 1;
        var s = new KmemCache(this, id, name, g.Value, flags, ctor, userSize);
        _byId[id] = s;
        _nextId = id % (MaxCaches - 1) + 1;
        _caches.Add(s);
        return s;
    }

    /// <summary>find_mergeable (mm/slab_common.c), newest cache first.</summary>
    private KmemCache? FindMergeable(int size, int align, SlabFlags flags, Action<nint>? ctor)
    {
        if (ctor != null || (flags & SlabFlags.NeverMerge) != 0) return null;
        size = SlabGeometry.AlignUp(size, SlabGeometry.PointerSize);
        align = SlabGeometry.CalculateAlignment(flags, align, size);
        size = SlabGeometry.AlignUp(size, align);
        for (int i = _caches.Count - 1; i >= 0; i--)
        {
            var s = _caches[i];
            if (IsUnmergeable(s)) continue;
            if (size > s.Size) continue;
            if ((flags & SlabFlags.MergeSame) != (s.Flags & SlabFlags.MergeSame)) continue;
            if ((s.Size & ~(align - 1)) != s.Size) continue;
            if (s.Size - size >= SlabGeometry.PointerSize) continue;
            return s;
        }
        return null;
    }

    /// <summary>slab_unmergeable.</summary>
    public static bool IsUnmergeable(KmemCache s) =>
        (s.Flags & SlabFlags.NeverMerge) != 0 || s.Ctor != null || s.UserSize != 0 || s.Refcount < 0;

    /// <summary>
    /// kmem_cache_destroy: drop a reference; the last one shuts the cache down. With live objects: the report
    /// "kmem_cache_destroy NAME: Slab cache still has objects", a <see cref="SlabException"/>, and the cache stays usable.
    /// </summary>
    public void DestroyCache(KmemCache? s)
    {
        if (s == null) return;
        lock (_slabMutex)
        {
            if (s.Destroyed) throw Report(new SlabException($"kmem_cache_destroy {s.Name}: cache already destroyed", $"WARNING: kmem_cache_destroy {s.Name}: cache already destroyed"));
            if (s.Refcount > 1)
            {
                s.Refcount--;
                if (s.Aliases.Count > 0)
                {
                    _aliases.Remove(s.Aliases[^1]);
                    s.Aliases.RemoveAt(s.Aliases.Count - 1);
                }
                return;
            }
            if (!s.Shutdown())
            {
                string text = $"kmem_cache_destroy {s.Name}: Slab cache still has objects when called from {CurrentTask.Comm}\n" +
                              $"{s.Name}: {s.NumSlabs} slabs, {s.LiveObjects} objects still allocated";
                throw Report(new SlabException($"kmem_cache_destroy {s.Name}: Slab cache still has objects", text));
            }
            s.Destroyed = true;
            _caches.Remove(s);
            _byId[s.Id] = null;
            s.ReleaseNative();
        }
    }

    /// <summary>kmem_cache_shrink on every cache (what drop_caches=2 does to slabs). Returns slabs freed.</summary>
    public int ShrinkAll()
    {
        int n = 0;
        foreach (var c in Caches) n += c.Shrink();
        return n;
    }

    /// <summary>rcu_barrier: wait for every SLAB_TYPESAFE_BY_RCU slab waiting for a grace period to be freed.</summary>
    public void RcuBarrier()
    {
        foreach (var c in Caches) c.ProcessRcuFrees(true);
    }

    /// <summary>The cache of a slab page by id (page->slab_cache).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal KmemCache? CacheById(int id) => (uint)id < MaxCaches ? Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_byId), id) : null;

    // =====================================================================================================
    // kmalloc
    // =====================================================================================================

    public enum KmallocType { Normal, Reclaim, Dma, Cgroup, Count }

    // size_index[]: kmalloc cache index for sizes 1..192 by (size - 1) / 8.
    private static ReadOnlySpan<byte> SizeIndex =>
    [
        3, 4, 5, 5, 6, 6, 6, 6,
        1, 1, 1, 1, 7, 7, 7, 7,
        2, 2, 2, 2, 2, 2, 2, 2,
    ];

    /// <summary>
    /// kmalloc_index for every size 1..8192 by (size - 1) / 8 (1024 bytes): above 192 the classes are powers of two
    /// &gt;= 256, multiples of 8, so (size - 1) / 8 decides the class as fls(size - 1) does. The hot path is one load.
    /// </summary>
    private static readonly byte[] s_sizeToIndex = BuildSizeToIndex();

    private static byte[] BuildSizeToIndex()
    {
        var t = new byte[KmallocMaxCacheSize / 8];
        for (int i = 0; i < t.Length; i++)
        {
            int size = i * 8 + 1;
            t[i] = (byte)(size <= 192 ? SizeIndex[i] : 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)size - 1));
        }
        return t;
    }

    /// <summary>kmalloc_index: the kmalloc cache index of a size 1..8192 (size_index table up to 192, fls(size - 1) above).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int KmallocIndex(nuint size) =>
        size <= 192 ? SizeIndex[(int)(size - 1) >> 3] : 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)size - 1);

    // kmalloc_type by the three deciding bits gathered as (DMA | RECLAIMABLE << 1 | ACCOUNT << 2):
    // __GFP_DMA wins, then __GFP_RECLAIMABLE, then __GFP_ACCOUNT (KmallocTypeOf), times KmallocIndexes.
    private static ReadOnlySpan<byte> TypeBase =>
    [
        (int)KmallocType.Normal * KmallocIndexes, (int)KmallocType.Dma * KmallocIndexes,
        (int)KmallocType.Reclaim * KmallocIndexes, (int)KmallocType.Dma * KmallocIndexes,
        (int)KmallocType.Cgroup * KmallocIndexes, (int)KmallocType.Dma * KmallocIndexes,
        (int)KmallocType.Reclaim * KmallocIndexes, (int)KmallocType.Dma * KmallocIndexes,
    ];

    /// <summary>The three kmalloc_type bits of <paramref name="gfp"/> as a 0..7 index, without branches.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int TypeBits(Gfp gfp)
    {
        uint g = (uint)gfp;
        return (int)((g & (uint)Gfp.Dma) | ((g >> 3) & 2) | ((g >> 20) & 4));
    }

    public static int KmallocSizeOf(int index) => index switch { 1 => 96, 2 => 192, _ => 1 << index };

    /// <summary>kmalloc_type: __GFP_DMA, then __GFP_RECLAIMABLE, then __GFP_ACCOUNT.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static KmallocType KmallocTypeOf(Gfp gfp)
    {
        if ((gfp & (Gfp.Dma | Gfp.Reclaimable | Gfp.Account)) == 0) return KmallocType.Normal;
        if ((gfp & Gfp.Dma) != 0) return KmallocType.Dma;
        if ((gfp & Gfp.Reclaimable) != 0) return KmallocType.Reclaim;
        return KmallocType.Cgroup;
    }

    public static string KmallocName(KmallocType t, int size)
    {
        string s = size >= 1024 && size % 1024 == 0 ? $"{size / 1024}k" : size.ToString();
        return t switch
        {
            KmallocType.Reclaim => "kmalloc-rcl-" + s,
            KmallocType.Dma => "dma-kmalloc-" + s,
            KmallocType.Cgroup => "kmalloc-cg-" + s,
            _ => "kmalloc-" + s,
        };
    }

    /// <summary>The kmalloc cache for a size (1..8192) and GFP flags (kmalloc_slab).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public KmemCache KmallocCache(nuint size, Gfp gfp) => _kmalloc[(int)KmallocTypeOf(gfp) * KmallocIndexes + KmallocIndex(size)];

    /// <summary>kmalloc(size, gfp): ZERO_SIZE_PTR for 0, a kmalloc cache object up to 8192, kmalloc_large above, null on failure.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Kmalloc(nuint size, Gfp gfp, [CallerMemberName] string caller = "")
    {
        void* p;
        SheafTable* t = ThreadSheaves.Table; // first: nothing else is live across the TLS resolver call
        if (size - 1 < KmallocMaxCacheSize)
        {
            // Type base by the GFP bits, class by (size - 1) / 8 (both in range by construction). Up to 192 the class
            // comes from the size_index span (RVA data): with a constant size and gfp, as most callers pass, the JIT
            // folds the whole index to a constant; above, one load from the 1 KiB table.
            int index = Unsafe.Add(ref MemoryMarshal.GetReference(TypeBase), TypeBits(gfp))
                      + (size <= 192
                          ? Unsafe.Add(ref MemoryMarshal.GetReference(SizeIndex), (nint)((size - 1) >> 3))
                          : Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(s_sizeToIndex), (nint)((size - 1) >> 3)));
            p = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_kmalloc), index).AllocNoTrace(t, gfp);
        }
        else p = KmallocSlow(size, gfp);
        if (Tracing.Emit.Tracepoints.KmallocOn) Tracing.Emit.SlabTrace.Kmalloc(this, p, size, gfp, caller);
        return p;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* KmallocSlow(nuint size, Gfp gfp) => size == 0 ? ZeroSizePtr : KmallocLarge(size, gfp);

    /// <summary>kzalloc.</summary>
    public void* Kzalloc(nuint size, Gfp gfp, [CallerMemberName] string caller = "") => Kmalloc(size, gfp | Gfp.Zero, caller);

    /// <summary>kmalloc_large: a compound page allocation, counted as unreclaimable slab memory as Linux does.</summary>
    public void* KmallocLarge(nuint size, Gfp gfp)
    {
        if (size > (nuint)KmallocMaxSize)
        {
            if ((gfp & Gfp.NoWarn) == 0)
                _machine.Log.Write(LogLevel.Warning,
                    $"WARNING: kmalloc_large: size {size} above KMALLOC_MAX_SIZE ({KmallocMaxSize}), order:{PageAllocator.GetOrder((long)Math.Min((ulong)size, (ulong)long.MaxValue))} > MAX_PAGE_ORDER ({Zone.MaxOrder}), mode:0x{(uint)gfp:x}({GfpFormat.Format(gfp)})");
            return null;
        }
        int order = PageAllocator.GetOrder((long)size);
        PageFrame* page = Pages.AllocPages((gfp | Gfp.Comp) & ~(Gfp.Dma32 | Gfp.HighMem), order);
        if (page == null) return null;
        page->Mapping = LargeKmallocMapping;
        Stat.Add(VmItem.NrSlabUnreclaimable, 1L << order);
        return MemMap.PageAddress(page);
    }

    /// <summary>kmalloc_array: n * size with overflow → null (nothing allocated).</summary>
    public void* KmallocArray(nuint n, nuint size, Gfp gfp)
    {
        if (size != 0 && n > nuint.MaxValue / size) return null;
        return Kmalloc(n * size, gfp);
    }

    /// <summary>kcalloc.</summary>
    public void* Kcalloc(nuint n, nuint size, Gfp gfp) => KmallocArray(n, size, gfp | Gfp.Zero);

    /// <summary>kfree. NULL and ZERO_SIZE_PTR are ignored; a bad pointer is reported and changes nothing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Kfree(void* p, [CallerMemberName] string caller = "")
    {
        if (Tracing.Emit.Tracepoints.KfreeOn) Tracing.Emit.SlabTrace.Kfree(this, p, caller);
        SheafTable* t = ThreadSheaves.Table; // first: see ThreadSheaves.Table
        // virt_to_page on cached fields, then compound_head. NULL and ZERO_SIZE_PTR lie below the window, so they
        // fail the bound too and KfreeOutside ignores them: no test of their own on the fast path.
        byte* window = _window;
        PageFrame* mapBase = _mapBase;
        nuint at = (nuint)((byte*)p - window);
        if (at >= _directBytes)
        {
            KfreeOutside(p);
            return;
        }
        PageFrame* page = KmemCache.HeadPage(mapBase, at);
        // SlabCache is a live cache id (1 .. MaxCaches - 1) on a slab's head page and 0 on every other page
        // (FreeSlabPages clears it), and _byId[0] is null: one load tells a slab, with no test of the Slab flag;
        // masked instead of bounds-checked.
        if (Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_byId), (nint)((uint)page->SlabCache & (MaxCaches - 1))) is { } s)
        {
            // The slab's MapCount holds its cache's sheaf offset: the thread's sheaf without loading the cache first.
            s.FreeObject(page, (nint)p, KmemCache.SlabBase(window, mapBase, page), t, (nint)(uint)page->MapCount);
            return;
        }
        KfreeSlow(page, p);
    }

    /// <summary>kfree of an address outside the direct map: NULL and ZERO_SIZE_PTR do nothing, anything else is reported.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void KfreeOutside(void* p)
    {
        if ((nuint)p <= ZeroSizeAddress) return;
        BadFreeOutside(null, p, "kfree");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void KfreeSlow(PageFrame* head, void* p)
    {
        if ((head->Flags & PageFlags.Slab) != 0)
            ThrowReport($"kfree: slab page with no cache for 0x{Kva(p)}", $"BUG: kfree: No slab cache for object 0x{Kva(p)}");
        if ((head->Flags & (PageFlags.Buddy | PageFlags.OnPcp)) != 0 || (head->Flags & PageFlags.Tail) != 0 && head->RefCount == 0)
            ThrowReport($"kfree: double free of 0x{Kva(p)} (its page is free)",
                $"BUG: kfree: double free or invalid pointer 0x{Kva(p)}: its page is free\n{Pages.BadPageText(head, head->Order, "freeing a free page (double free)")}");
        if (head->Mapping != LargeKmallocMapping || (head->Flags & PageFlags.AllocHead) == 0)
            ThrowReport($"kfree: 0x{Kva(p)} is not a kmalloc allocation",
                $"WARNING: kfree: 0x{Kva(p)} is not a kmalloc allocation\n{Pages.BadPageText(head, head->Order, "Not a kmalloc allocation")}");
        if (p != MemMap.PageAddress(head))
            ThrowReport($"kfree: 0x{Kva(p)} points into a kmalloc_large allocation at 0x{Kva(MemMap.PageAddress(head))} (offset {(byte*)p - MemMap.PageAddress(head)})",
                $"BUG: kfree: invalid pointer 0x{Kva(p)}: offset {(byte*)p - MemMap.PageAddress(head)} into the kmalloc_large allocation at 0x{Kva(MemMap.PageAddress(head))} (order {head->Order})");
        int order = head->Order;
        head->Mapping = 0;
        Stat.Add(VmItem.NrSlabUnreclaimable, -(1L << order));
        Pages.FreePages(head, order);
    }

    /// <summary>ksize: the usable size of a kmalloc'ed (or cache) object; 0 for NULL/ZERO_SIZE_PTR.</summary>
    public nuint Ksize(void* p)
    {
        if ((nuint)p <= (nuint)ZeroSizePtr) return 0;
        PageFrame* page = MemMap.VirtToPage(p);
        if (page == null) BadFreeOutside(null, p, "ksize");
        page = MemMap.CompoundHead(page!);
        if ((page->Flags & PageFlags.Slab) != 0 && CacheById(page->SlabCache) is { } s)
            return (nuint)((s.Flags & (SlabFlags.RedZone | SlabFlags.Poison)) != 0 ? s.ObjectSize
                : (s.Flags & (SlabFlags.TypesafeByRcu | SlabFlags.StoreUser)) != 0 ? s.Inuse : s.Size);
        if (page->Mapping == LargeKmallocMapping && (page->Flags & PageFlags.AllocHead) != 0)
            return (nuint)ArchProfile.PageSize << page->Order;
        ThrowReport($"ksize: 0x{Kva(p)} is not a kmalloc allocation", $"WARNING: ksize: 0x{Kva(p)} is not a kmalloc allocation");
        return 0;
    }

    /// <summary>kmalloc_size_roundup.</summary>
    public static nuint KmallocSizeRoundup(nuint size)
    {
        if (size != 0 && size <= KmallocMaxCacheSize) return (nuint)KmallocSizeOf(KmallocIndex(size));
        if (size != 0 && size <= (nuint)KmallocMaxSize) return (nuint)ArchProfile.PageSize << PageAllocator.GetOrder((long)size);
        return size;
    }

    /// <summary>
    /// krealloc: in place while the new size fits ksize (with __GFP_ZERO the spare bytes beyond the new size are
    /// zeroed, so a later growth in place reads zeros); otherwise a new object, the old contents copied, the old freed.
    /// krealloc(NULL, n) = kmalloc(n); krealloc(p, 0) frees p and returns ZERO_SIZE_PTR. On failure p stays valid.
    /// </summary>
    public void* Krealloc(void* p, nuint newSize, Gfp gfp)
    {
        if (newSize == 0)
        {
            Kfree(p);
            return ZeroSizePtr;
        }
        if ((nuint)p <= (nuint)ZeroSizePtr) return Kmalloc(newSize, gfp);
        nuint ks = Ksize(p);
        if (newSize <= ks)
        {
            if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear((byte*)p + newSize, ks - newSize);
            return p;
        }
        void* ret = Kmalloc(newSize, gfp);
        if (ret == null) return null;
        Buffer.MemoryCopy(p, ret, newSize, ks);
        Kfree(p);
        return ret;
    }

    /// <summary>kfree_sensitive: zero the whole usable size, then free.</summary>
    public void KfreeSensitive(void* p)
    {
        if ((nuint)p <= (nuint)ZeroSizePtr) return;
        nuint ks = Ksize(p);
        NativeMemory.Clear(p, ks);
        Kfree(p);
    }

    /// <summary>kmemdup.</summary>
    public void* Kmemdup(ReadOnlySpan<byte> src, Gfp gfp)
    {
        void* p = Kmalloc((nuint)src.Length, gfp);
        if (p != null && (nuint)p > (nuint)ZeroSizePtr) src.CopyTo(new Span<byte>(p, src.Length));
        return p;
    }

    /// <summary>kstrdup of a NUL-terminated string: a kmalloc'ed copy including the NUL; null for null.</summary>
    public byte* Kstrdup(byte* s, Gfp gfp)
    {
        if (s == null) return null;
        nuint len = (nuint)MemoryMarshal.CreateReadOnlySpanFromNullTerminated(s).Length + 1;
        byte* p = (byte*)Kmalloc(len, gfp);
        if (p != null) Buffer.MemoryCopy(s, p, len, len);
        return p;
    }

    /// <summary>kstrdup of a managed string (UTF-8 plus NUL); allocates a managed buffer for the encoding.</summary>
    public byte* Kstrdup(string? s, Gfp gfp) => s == null ? null : Kstrndup(s, int.MaxValue, gfp);

    /// <summary>kstrndup: at most <paramref name="max"/> bytes of the string, always NUL-terminated.</summary>
    public byte* Kstrndup(string? s, int max, Gfp gfp)
    {
        if (s == null) return null;
        byte[] utf8 = Encoding.UTF8.GetBytes(s);
        int len = Math.Min(utf8.Length, max);
        byte* p = (byte*)Kmalloc((nuint)len + 1, gfp);
        if (p == null) return null;
        utf8.AsSpan(0, len).CopyTo(new Span<byte>(p, len));
        p[len] = 0;
        return p;
    }

    /// <summary>kstrndup of a NUL-terminated string.</summary>
    public byte* Kstrndup(byte* s, nuint max, Gfp gfp)
    {
        if (s == null) return null;
        nuint len = 0;
        while (len < max && s[len] != 0) len++;
        byte* p = (byte*)Kmalloc(len + 1, gfp);
        if (p == null) return null;
        Buffer.MemoryCopy(s, p, len, len);
        p[len] = 0;
        return p;
    }

    // =====================================================================================================
    // Reports
    // =====================================================================================================

    internal string Kva(void* p) => _machine.Physical.ToKernelVirtual(p).ToString(_machine.Profile.AddressHexDigits == 8 ? "x8" : "x16");

    private SlabException Report(SlabException e)
    {
        _machine.Log.Write(LogLevel.Err, e.Report);
        return e;
    }

    [DoesNotReturn]
    private void ThrowReport(string message, string report) => throw Report(new SlabException(message, report));

    /// <summary>slab_err/object_err in SLUB's shape.</summary>
    [DoesNotReturn]
    internal void ThrowSlabError(KmemCache s, PageFrame* slab, void* x, string reason, long offset)
    {
        var sb = new StringBuilder();
        sb.Append("=============================================================================\n");
        sb.Append($"BUG {s.Name} (Not tainted): {reason}\n");
        sb.Append("-----------------------------------------------------------------------------\n\n");
        sb.Append($"{s.DescribeSlab(slab)}\n");
        sb.Append($"Object 0x{Kva(x)} @offset={offset}\n");
        sb.Append($"CPU: {Cpu.Current(CpuCount)} PID: {CurrentTask.Pid} Comm: {CurrentTask.Comm}");
        throw Report(new SlabException($"BUG {s.Name}: {reason} (object 0x{Kva(x)} @offset={offset})", sb.ToString()));
    }

    [DoesNotReturn]
    internal void BadFreeOutside(KmemCache? s, void* p, string func) =>
        ThrowReport($"{func}: 0x{Kva(p)} is not a direct-map address{(s != null ? $" (cache {s.Name})" : "")}",
            $"BUG: {func}: invalid pointer 0x{Kva(p)}: not in the direct map (virt_to_page has no page for it){(s != null ? $", cache {s.Name}" : "")}");

    [DoesNotReturn]
    internal void BadFreeWrongCache(KmemCache s, PageFrame* head, void* x)
    {
        if ((head->Flags & PageFlags.Slab) == 0)
            ThrowReport($"kmem_cache_free({s.Name}): 0x{Kva(x)} is not a slab object",
                $"WARNING: virt_to_cache: Object is not a Slab page!\nkmem_cache_free: 0x{Kva(x)} (cache {s.Name})");
        var other = CacheById(head->SlabCache);
        ThrowReport($"kmem_cache_free: Wrong slab cache. {s.Name} but object 0x{Kva(x)} is from {other?.Name ?? "?"}",
            $"WARNING: cache_from_obj: Wrong slab cache. {s.Name} but object is from {other?.Name ?? "?"}\nObject 0x{Kva(x)}");
    }

    // =====================================================================================================
    // Views
    // =====================================================================================================

    /// <summary>/proc/slabinfo, version 2.1, newest cache first as Linux's slab_caches list.</summary>
    public string SlabInfo()
    {
        var sb = new StringBuilder();
        sb.Append("slabinfo - version: 2.1\n");
        sb.Append("# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>\n");
        var caches = Caches;
        for (int i = caches.Count - 1; i >= 0; i--) sb.Append(SlabInfoLine(caches[i]));
        return sb.ToString();
    }

    /// <summary>One slabinfo line: <c>%-17s %6lu %6lu %6u %4u %4d : tunables %4u %4u %4u : slabdata %6lu %6lu %6lu</c>.</summary>
    public static string SlabInfoLine(KmemCache c)
    {
        var (active, num, activeSlabs, numSlabs) = c.SlabInfo();
        return $"{c.Name,-17} {active,6} {num,6} {c.Size,6} {c.ObjectsPerSlab,4} {1 << c.Order,4} : tunables {0,4} {0,4} {0,4} : slabdata {activeSlabs,6} {numSlabs,6} {0,6}\n";
    }

    /// <summary>Alias listing: one line per alias, "alias -> cache".</summary>
    public string AliasInfo()
    {
        var sb = new StringBuilder();
        foreach (var (alias, cache) in Aliases.OrderBy(a => a.Key, StringComparer.Ordinal))
            sb.Append($"{alias} -> {cache.Name}\n");
        return sb.ToString();
    }

    /// <summary>Pages in slabs of every cache plus kmalloc_large (NR_SLAB_RECLAIMABLE + NR_SLAB_UNRECLAIMABLE).</summary>
    public long SlabPages => Stat[VmItem.NrSlabReclaimable] + Stat[VmItem.NrSlabUnreclaimable];

    public void Dispose()
    {
        lock (_slabMutex)
            foreach (var c in _caches) c.ReleaseNative();
    }
}
