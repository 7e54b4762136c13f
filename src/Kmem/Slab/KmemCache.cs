using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Kmem.Diagnostics;
using Kmem.PageAlloc;
using Kmem.Physical;

namespace Kmem.Slab;

/// <summary>One CPU's view of a cache (Linux's <c>struct kmem_cache_cpu</c>), 64 bytes in native memory.</summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct KmemCacheCpu
{
    /// <summary>First free object of the CPU slab that only this CPU may take (host address), or 0.</summary>
    [FieldOffset(0)] public nint Freelist;
    /// <summary>The per-CPU lock: 0 free, 1 held (see <see cref="KmemCache"/> design, section 4).</summary>
    [FieldOffset(8)] public int Lock;
    /// <summary>PFN of the CPU slab (frozen), or -1.</summary>
    [FieldOffset(12)] public int Slab;
    /// <summary>PFN of the first slab on the CPU partial list (linked through PageFrame.Next), or -1.</summary>
    [FieldOffset(16)] public int Partial;
    /// <summary>Slabs on the CPU partial list.</summary>
    [FieldOffset(20)] public int PartialSlabs;
    /// <summary>Objects handed out / taken back on this CPU's locked paths (leak accounting).</summary>
    [FieldOffset(24)] public long Allocs;
    [FieldOffset(32)] public long Frees;
}

/// <summary>
/// A SLUB object cache (<c>struct kmem_cache</c>). Create it with <see cref="SlabAllocator.CreateCache"/>; the
/// design statement is on <see cref="SlabAllocator"/>. The instance is the lifetime root; everything the hot paths
/// touch is in readonly fields or in native per-CPU structs.
/// </summary>
public sealed unsafe class KmemCache
{
    // Slab state bits kept in PageFrame.Mapping of a slab's head page (Linux: PG_workingset for "on node partial").
    internal const nint OnNodePartial = 1, OnCpuPartial = 2, RcuPending = 4;

    private readonly SlabAllocator _owner;
    private readonly MemMap _map;
    private readonly PageAllocator _pages;
    private readonly int _nrCpus;
    private KmemCacheCpu* _cpu;

    // Hot, immutable after create (merging can grow ObjectSize/Inuse within Size, never the layout).
    private readonly int _size;
    private readonly nint _offset;         // free pointer offset (nint, as _bias and _sheafOffset: the fast paths add them to addresses unwidened)
    private readonly int _objects;
    private readonly int _order;
    private readonly nint _bias;           // red_left_pad: object = slot + bias
    private readonly int _slabBytes;
    private readonly nuint _sizeN;         // _size, for the free paths' span multiply
    private readonly ulong _divisible;     // Lemire: n % size == 0  <=>  n * _divisible <= _divisible - 1
    private readonly nint _random;         // freelist pointer hardening key (s->random)
    private readonly bool _debug;          // red zone / poison / store user: write the metadata
    private readonly bool _hasCpuPartial;
    private readonly Gfp _allocFlags;
    private readonly VmItem _statItem;
    private readonly byte* _window;        // direct map base (page_address = _window + pfn * PAGE_SIZE)
    private readonly PageFrame* _mapBase;  // mem_map
    private readonly nuint _directBytes;   // size of the direct map (virt_to_page bound)
    private readonly int _slot;            // global thread-sheaf slot, 0: no sheaves (debug caches, or no slot left)
    private readonly nint _sheafOffset;    // that slot's sheaf in a thread's table (ThreadSheaves.OffsetOf)
    private readonly int _sheafCap;        // objects a thread sheaf of this cache holds (<= ThreadSheaves.MaxCapacity)
    private readonly int _sheafBatch;      // refill/flush batch: half a sheaf

    // Node (one node): list_lock and what it protects.
    private int _listLock;
    private int _partialHead = PageFrame.None;
    private int _partialTail = PageFrame.None;
    private int _nrPartial;
    private long _nrSlabs;                 // atomic
    private long _totalObjects;            // atomic
    private long _slowFrees;               // atomic: frees that went through __slab_free
    private int _rcuHead = PageFrame.None; // slabs waiting for a grace period, linked through Next; under list_lock

    internal KmemCache(SlabAllocator owner, int id, string name, SlabGeometry g, SlabFlags flags, Action<nint>? ctor, int userSize)
    {
        _owner = owner;
        _map = owner.MemMap;
        _pages = owner.Pages;
        _nrCpus = owner.CpuCount;
        _window = owner.WindowBase;
        _mapBase = _map.Base;
        Id = id;
        Name = name;
        Geometry = g;
        Flags = flags;
        Ctor = ctor;
        UserSize = userSize;
        ObjectSize = g.ObjectSize;
        Inuse = g.Inuse;
        _size = g.Size;
        _sizeN = (nuint)g.Size;
        _offset = g.Offset;
        _objects = g.Objects;
        _order = g.Order;
        _bias = g.RedLeftPad;
        _slabBytes = g.SlabBytes;
        _divisible = ulong.MaxValue / (ulong)g.Size + 1;
        _random = (nint)Random.Shared.NextInt64() | 1;
        _debug = (flags & SlabFlags.DebugMetadata) != 0;
        _hasCpuPartial = g.CpuPartial != 0;
        _allocFlags = Gfp.Comp
            | ((flags & SlabFlags.CacheDma) != 0 ? Gfp.Dma : 0)
            | ((flags & SlabFlags.CacheDma32) != 0 ? Gfp.Dma32 : 0)
            | ((flags & SlabFlags.ReclaimAccount) != 0 ? Gfp.Reclaimable : 0);
        _statItem = (flags & SlabFlags.ReclaimAccount) != 0 ? VmItem.NrSlabReclaimable : VmItem.NrSlabUnreclaimable;
        Refcount = 1;
        _directBytes = owner.DirectMapBytes;
        // Sheaf capacity by object size, a guess that bounds what one thread holds per cache to 8-32 KiB.
        _sheafCap = _size <= 256 ? ThreadSheaves.MaxCapacity : _size <= 1024 ? 16 : _size <= 4096 ? 8 : 4;
        _sheafBatch = _sheafCap / 2;
        _slot = _debug ? 0 : ThreadSheaves.Register(this);
        _sheafOffset = ThreadSheaves.OffsetOf(_slot);
        _cpu = (KmemCacheCpu*)NativeMemory.AlignedAlloc((nuint)(_nrCpus * sizeof(KmemCacheCpu)), 64);
        for (int c = 0; c < _nrCpus; c++)
            _cpu[c] = new KmemCacheCpu { Slab = PageFrame.None, Partial = PageFrame.None };
    }

    /// <summary>Index in the allocator's cache table (PageFrame.SlabCache of this cache's slabs).</summary>
    public int Id { get; }
    public string Name { get; }
    public SlabFlags Flags { get; }
    public SlabGeometry Geometry { get; }
    public Action<nint>? Ctor { get; }
    /// <summary>Hardened-usercopy region size (kmalloc caches: the whole object); non-zero makes a cache unmergeable.</summary>
    public int UserSize { get; }
    /// <summary>s->object_size (grows when a larger cache merges into this one).</summary>
    public int ObjectSize { get; internal set; }
    /// <summary>s->inuse.</summary>
    public int Inuse { get; internal set; }
    /// <summary>s->size: the slot, what slabinfo prints as objsize.</summary>
    public int Size => _size;
    public int Order => _order;
    public int ObjectsPerSlab => _objects;
    /// <summary>s->refcount: 1 + caches merged into this one; -1 while it must not be a merge target.</summary>
    public int Refcount { get; internal set; }
    /// <summary>Names of caches created as aliases of this one (find_mergeable), in creation order.</summary>
    public List<string> Aliases { get; } = new();
    internal bool Destroyed;

    /// <summary>kmem_cache_size: the object size callers may use.</summary>
    public int KmemCacheSize => ObjectSize;

    // =====================================================================================================
    // Freelist pointers (CONFIG_SLAB_FREELIST_HARDENED: ptr ^ s->random ^ swab(address of the pointer))
    // =====================================================================================================

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nint GetFreePointer(nint obj)
    {
        nint at = obj + _offset;
        return *(nint*)at ^ _random ^ (nint)BinaryPrimitives.ReverseEndianness((ulong)at);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void SetFreePointer(nint obj, nint next)
    {
        nint at = obj + _offset;
        *(nint*)at = next ^ _random ^ (nint)BinaryPrimitives.ReverseEndianness((ulong)at);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private nint SlabBase(PageFrame* slab) => SlabBase(_window, _mapBase, slab);

    // =====================================================================================================
    // Allocation
    // =====================================================================================================

    /// <summary>kmem_cache_alloc: an object, or null when the page allocator fails.</summary>
    /// <remarks>
    /// Fast path: pop the calling thread's sheaf inside its Busy window (no atomic instruction, see the design
    /// statement, section 5). Anything else (no sheaf yet, empty, a drainer owns it, a debug cache) is
    /// <see cref="AllocSlow"/>.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Alloc(Gfp gfp, [CallerMemberName] string caller = "")
    {
        void* p = AllocNoTrace(gfp);
        if (Tracing.Emit.Tracepoints.KmemCacheAllocOn && (Flags & SlabFlags.Kmalloc) == 0) Tracing.Emit.SlabTrace.CacheAlloc(_owner, this, p, gfp, caller);
        return p;
    }

    /// <summary>kmem_cache_alloc without its tracepoint: kmalloc's path (Linux's kmalloc logs only trace_kmalloc).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void* AllocNoTrace(Gfp gfp) => AllocNoTrace(ThreadSheaves.Table, gfp);

    /// <summary>
    /// <see cref="AllocNoTrace(Gfp)"/> with the calling thread's sheaf table already loaded (kmalloc loads it before
    /// choosing the cache, so that nothing has to survive the TLS resolver call).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void* AllocNoTrace(SheafTable* t, Gfp gfp)
    {
        if (t != null)
        {
            Sheaf* sh = t->At(_sheafOffset);
            Volatile.Write(ref sh->Busy, 1);
            // Empty (n = -1) and stopped (the sign bit) both compare as too large: one test for both.
            int n = Volatile.Read(ref sh->Size) - 1;
            if ((uint)n < ThreadSheaves.MaxCapacity)
            {
                nint obj = sh->Objects[n];
                sh->Close(n);
                *(nint*)(obj + _offset) = 0; // a live object never looks free (see FreeObject)
                if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear((void*)obj, (nuint)ObjectSize);
                return (void*)obj;
            }
            Volatile.Write(ref sh->Busy, 0);
        }
        return AllocSlow(gfp);
    }

    /// <summary>kmem_cache_zalloc.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void* Zalloc(Gfp gfp, [CallerMemberName] string caller = "") => Alloc(gfp | Gfp.Zero, caller);

    /// <summary>
    /// The sheaf is empty (or the thread has no table yet, or a drainer owns it): take half a sheaf from the CPU layer
    /// in one CPU-lock round trip, return one object and keep the rest in the sheaf. Debug caches have no sheaves and
    /// come here every time.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocSlow(Gfp gfp)
    {
        if (_slot == 0) return AllocCpu(gfp);
        Sheaf* sh = ThreadSheaves.GetOrCreate(_sheafOffset);
        nint* batch = stackalloc nint[ThreadSheaves.MaxCapacity];
        int got = AllocFromCpu(gfp, batch, _sheafBatch);
        if (got == 0) return null;
        nint obj = batch[--got];
        if (got != 0)
        {
            int stored = 0;
            Volatile.Write(ref sh->Busy, 1);
            int size = Volatile.Read(ref sh->Size);
            if ((size & Sheaf.StopBit) == 0)
            {
                stored = Math.Min(_sheafCap - size, got);
                Buffer.MemoryCopy(batch + got - stored, sh->Objects + size, stored * sizeof(nint), stored * sizeof(nint));
                sh->Size = size + stored;
            }
            Volatile.Write(ref sh->Busy, 0);
            if (stored < got) FlushToCpu(batch, got - stored);
        }
        *(nint*)(obj + _offset) = 0;
        if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear((void*)obj, (nuint)ObjectSize);
        return (void*)obj;
    }

    /// <summary>
    /// Take up to <paramref name="n"/> free objects from the CPU layer (one CPU-lock round trip, refilling the CPU
    /// freelist as needed). They stay free-marked (their link words are untouched). Returns how many, fewer only when
    /// the page allocator fails.
    /// </summary>
    private int AllocFromCpu(Gfp gfp, nint* dst, int n)
    {
        KmemCacheCpu* c = LockCpu(Cpu.Current(_nrCpus));
        int i = 0;
        for (; i < n; i++)
        {
            nint obj = c->Freelist;
            if (obj == 0)
            {
                obj = RefillLocked(ref c, gfp);
                if (obj == 0) break;
            }
            c->Freelist = GetFreePointer(obj);
            dst[i] = obj;
        }
        c->Allocs += i;
        Volatile.Write(ref c->Lock, 0);
        return i;
    }

    /// <summary>kmem_cache_alloc straight from the CPU layer (caches without sheaves: the debug caches).</summary>
    private void* AllocCpu(Gfp gfp)
    {
        KmemCacheCpu* c = _cpu + Cpu.Current(_nrCpus);
        if (Interlocked.CompareExchange(ref c->Lock, 1, 0) == 0)
        {
            nint obj = c->Freelist;
            if (obj != 0 && !_debug)
            {
                c->Freelist = GetFreePointer(obj);
                *(nint*)(obj + _offset) = 0;
                c->Allocs++;
                Volatile.Write(ref c->Lock, 0);
                if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear((void*)obj, (nuint)ObjectSize);
                return (void*)obj;
            }
            return AllocSlowLocked(c, gfp);
        }
        return AllocSlowLocked(LockCpu(Cpu.Current(_nrCpus)), gfp);
    }

    /// <summary>___slab_alloc with the CPU lock held; returns with it released.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocSlowLocked(KmemCacheCpu* c, Gfp gfp)
    {
        nint obj = RefillLocked(ref c, gfp);
        if (obj == 0)
        {
            Volatile.Write(ref c->Lock, 0);
            return null;
        }
        c->Freelist = GetFreePointer(obj);
        *(nint*)(obj + _offset) = 0;
        c->Allocs++;
        Volatile.Write(ref c->Lock, 0);
        if (_debug) DebugOnAlloc(obj);
        if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear((void*)obj, (nuint)ObjectSize);
        return (void*)obj;
    }

    /// <summary>
    /// Make c->freelist non-empty (CPU lock held on entry and exit; <paramref name="c"/> may change if the lock had to be
    /// dropped to allocate a slab). Returns the first free object, or 0 when no memory.
    /// </summary>
    private nint RefillLocked(ref KmemCacheCpu* c, Gfp gfp)
    {
        if (c->Freelist != 0) return c->Freelist;
        // 1. Objects freed remotely into the CPU slab (get_freelist). If none, the slab is full: it leaves the CPU
        //    unfrozen and on no list, as deactivate_slab does with a full slab.
        if (c->Slab != PageFrame.None)
        {
            PageFrame* slab = _map.PfnToPage(c->Slab);
            SlabLock(slab);
            nint fl = slab->Freelist;
            slab->Freelist = 0;
            slab->Inuse = (ushort)_objects;
            if (fl == 0) slab->Frozen = false;
            SlabUnlock(slab);
            if (fl != 0) return c->Freelist = fl;
            c->Slab = PageFrame.None;
        }
        // 2. The CPU partial list: freeze its first slab.
        if (c->Partial != PageFrame.None)
        {
            int pfn = c->Partial;
            PageFrame* slab = _map.PfnToPage(pfn);
            c->Partial = slab->Next;
            c->PartialSlabs--;
            slab->Next = PageFrame.None;
            slab->Mapping &= ~OnCpuPartial;
            c->Slab = pfn;
            return c->Freelist = FreezeSlab(slab);
        }
        // 3. The node partial list (get_partial_node): one slab for the CPU, more for its partial list.
        if (Volatile.Read(ref _nrPartial) != 0)
        {
            nint fl = GetPartialNode(c);
            if (fl != 0) return c->Freelist = fl;
        }
        // 4. A new slab from the page allocator, with no slab lock held (section 4): with a sleeping gfp AllocPages
        //    enters direct reclaim, whose shrinkers may free into (or shrink) this very cache on this thread.
        //    The CPU may have changed meanwhile (another thread, or a shrinker, installed a CPU slab): as SLUB's
        //    retry_load_slab, a CPU slab found there is detached under the lock and deactivated without it.
        Volatile.Write(ref c->Lock, 0);
        PageFrame* fresh = NewSlab(gfp);
        while (true)
        {
            c = LockCpu(Cpu.Current(_nrCpus));
            if (fresh == null)
                return c->Freelist; // another thread may have refilled meanwhile
            if (c->Slab == PageFrame.None) break;
            int oldPfn = c->Slab;
            nint oldFreelist = c->Freelist;
            c->Slab = PageFrame.None;
            c->Freelist = 0;
            Volatile.Write(ref c->Lock, 0);
            DeactivateSlab(_map.PfnToPage(oldPfn), oldFreelist);
        }
        fresh->Frozen = true;
        c->Slab = (int)_map.PageToPfn(fresh);
        c->Freelist = fresh->Freelist;
        fresh->Freelist = 0;
        fresh->Inuse = (ushort)_objects;
        return c->Freelist;
    }

    /// <summary>Take a slab's freelist and freeze it for the CPU (slab lock). Returns the freelist.</summary>
    private nint FreezeSlab(PageFrame* slab)
    {
        SlabLock(slab);
        nint fl = slab->Freelist;
        slab->Freelist = 0;
        slab->Inuse = (ushort)_objects;
        slab->Frozen = true;
        SlabUnlock(slab);
        return fl;
    }

    private nint GetPartialNode(KmemCacheCpu* c)
    {
        nint result = 0;
        ListLock();
        while (_partialHead != PageFrame.None)
        {
            int pfn = _partialHead;
            PageFrame* slab = _map.PfnToPage(pfn);
            RemovePartial(slab);
            if (result == 0)
            {
                c->Slab = pfn;
                result = FreezeSlab(slab);
                if (!_hasCpuPartial) break;
            }
            else
            {
                slab->Mapping |= OnCpuPartial;
                slab->Next = c->Partial;
                c->Partial = pfn;
                c->PartialSlabs++;
            }
            if (c->PartialSlabs > Geometry.CpuPartialSlabs / 2) break;
        }
        ListUnlock();
        return result;
    }

    /// <summary>allocate_slab: pages, descriptor, freelist in address order, constructors.</summary>
    private PageFrame* NewSlab(Gfp gfp)
    {
        if (_rcuHead != PageFrame.None) ProcessRcuFrees(false);
        // Only the reclaim/constraint bits of the caller matter; zone and mobility come from the cache.
        Gfp pageGfp = (gfp & ~(Gfp.Zero | Gfp.Dma | Gfp.Dma32 | Gfp.HighMem | Gfp.Movable | Gfp.Reclaimable | Gfp.Account | Gfp.Comp)) | _allocFlags;
        int order = _order;
        PageFrame* page = null;
        if (order > Geometry.MinOrder)
            page = _pages.AllocPages((pageGfp | Gfp.NoWarn | Gfp.NoRetry) & ~Gfp.NoFail, order);
        if (page == null)
        {
            order = Geometry.MinOrder;
            page = _pages.AllocPages(pageGfp, order);
            if (page == null) return null;
        }
        int objects = ArchProfile.PageSize << order == _slabBytes ? _objects : SlabGeometry.OrderObjects(order, _size);
        page->Flags |= PageFlags.Slab;
        page->SlabCache = Id;
        page->MapCount = (int)_sheafOffset; // read by kfree's fast path without going through the cache
        page->ObjectsFrozen = 0;
        page->Objects = (ushort)objects;
        page->Inuse = 0;
        page->Private = 0;
        page->Mapping = 0;
        page->Next = page->Prev = PageFrame.None;
        nint start = SlabBase(page) + _bias;
        for (int i = 0; i < objects; i++)
        {
            nint obj = start + i * _size;
            if (_debug)
            {
                DebugInitObject(obj, active: false);
                if ((Flags & SlabFlags.StoreUser) != 0) new Span<byte>((byte*)obj + TrackOffset, 2 * SlabGeometry.TrackSize).Clear();
            }
            Ctor?.Invoke(obj);
            SetFreePointer(obj, i + 1 < objects ? obj + _size : 0);
        }
        page->Freelist = start;
        Interlocked.Increment(ref _nrSlabs);
        Interlocked.Add(ref _totalObjects, objects);
        _owner.Stat.Add(_statItem, 1L << order);
        return page;
    }

    // =====================================================================================================
    // Free
    // =====================================================================================================

    /// <summary>kmem_cache_free. Bad pointers are reported (<see cref="SlabException"/>) and change nothing.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(void* x, [CallerMemberName] string caller = "")
    {
        if (Tracing.Emit.Tracepoints.KmemCacheFreeOn) Tracing.Emit.SlabTrace.CacheFree(_owner, this, x, caller);
        SheafTable* t = ThreadSheaves.Table; // first: see ThreadSheaves.Table
        byte* window = _window;
        PageFrame* mapBase = _mapBase;
        nuint at = (nuint)((byte*)x - window); // virt_to_page on cached fields
        if (at >= _directBytes) { _owner.BadFreeOutside(this, x, "kmem_cache_free"); return; }
        PageFrame* page = HeadPage(mapBase, at);
        // SlabCache alone: it is nonzero only on a slab's head page (ids start at 1; FreeSlabPages clears it).
        if (page->SlabCache != Id) { _owner.BadFreeWrongCache(this, page, x); return; }
        FreeObject(page, (nint)x, SlabBase(window, mapBase, page), t, _sheafOffset);
    }

    /// <summary>
    /// virt_to_page then compound_head for a direct-map offset already checked against the direct map's size, on
    /// mem_map as the free paths hold it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static PageFrame* HeadPage(PageFrame* mapBase, nuint at)
    {
        PageFrame* page = mapBase + (at >> ArchProfile.PageShift);
        return (page->Flags & PageFlags.Tail) != 0 ? mapBase + page->CompoundHead : page;
    }

    /// <summary>page_address of a slab's head page, from the direct map base and mem_map (as the free paths hold them).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static nint SlabBase(byte* window, PageFrame* mapBase, PageFrame* slab) =>
        (nint)(window + (((nint)slab - (nint)mapBase) << (ArchProfile.PageShift - 6)));

    /// <summary>Free an object already known to lie in <paramref name="slab"/>, a slab of this cache starting at <paramref name="slabBase"/>.</summary>
    /// <remarks>
    /// Fast path: the slot check (a multiply), then the double-free check: the link word of a free object always
    /// decodes to null or to an object of its slab, a live one never does (the alloc paths clear it). The encoding key
    /// (s->random ^ swab(&amp;link)) is computed once for that check and for the store of the encoded null that keeps
    /// the object looking free while it sits in the sheaf. Then a push onto the calling thread's sheaf inside its
    /// Busy window.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FreeObject(PageFrame* slab, nint x, nint slabBase, SheafTable* t, nint sheafOffset)
    {
        nint objBase = slabBase + _bias;
        nint off = x - objBase;
        nuint span = slab->Objects * _sizeN;
        if (!IsSlotOffset(off, span))
        {
            FreeChecked(slab, x);
            return;
        }
        nint link = x + _offset;
        nint key = _random ^ (nint)BinaryPrimitives.ReverseEndianness((ulong)link);
        if (LooksFree(*(nint*)link ^ key, objBase, span)) // only now: x is a slot, so the link word lies inside it
        {
            FreeChecked(slab, x);
            return;
        }
        if (t != null)
        {
            Sheaf* sh = t->At(sheafOffset);
            *(nint*)link = key;
            Volatile.Write(ref sh->Busy, 1);
            int n = Volatile.Read(ref sh->Size); // full and stopped (the sign bit) both fail the unsigned compare
            if ((uint)n < (uint)_sheafCap)
            {
                sh->Objects[n] = x;
                sh->Close(n + 1);
                return;
            }
            Volatile.Write(ref sh->Busy, 0);
        }
        FreeSlow(slab, x);
    }

    /// <summary>
    /// Is <paramref name="off"/> (from the first object of a slab whose objects span <paramref name="span"/> bytes) the
    /// start of a slot? Lemire's divisibility test (off * ceil(2^64 / size) &lt; ceil(2^64 / size) exactly when size
    /// divides off, for off &lt; 2^32, which the span test guarantees) and the span test.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool IsSlotOffset(nint off, nuint span) => (ulong)off * _divisible < _divisible && (nuint)off < span;

    /// <summary>
    /// Does a decoded link word look like a freelist link (null, or an object of the slab)? Every free object's does
    /// (on a freelist, or free-marked with the encoded null in a sheaf); a live object's never does, since the alloc
    /// paths clear it and the hardening key turns whatever its user writes there into a random-looking link.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool LooksFree(nint next, nint objBase, nuint span) => next == 0 || (nuint)(next - objBase) < span;

    /// <summary>
    /// The sheaf is full (or missing, or being drained): move its older half to the CPU layer in one CPU-lock round
    /// trip and keep <paramref name="x"/>. Debug caches have no sheaves and free through the CPU slab every time.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeSlow(PageFrame* slab, nint x)
    {
        if (_slot == 0)
        {
            if (_debug) DebugOnFree(x);
            FreeCpu(slab, x);
            return;
        }
        SetFreePointer(x, 0);
        Sheaf* sh = ThreadSheaves.GetOrCreate(_sheafOffset);
        nint* batch = stackalloc nint[ThreadSheaves.MaxCapacity + 1];
        int taken = 0;
        bool kept = false;
        Volatile.Write(ref sh->Busy, 1);
        int n = Volatile.Read(ref sh->Size);
        if ((n & Sheaf.StopBit) == 0)
        {
            if (n >= _sheafCap)
            {
                taken = _sheafBatch;
                Buffer.MemoryCopy(sh->Objects, batch, taken * sizeof(nint), taken * sizeof(nint));
                Buffer.MemoryCopy(sh->Objects + taken, sh->Objects, (n - taken) * sizeof(nint), (n - taken) * sizeof(nint));
                n -= taken;
            }
            sh->Objects[n] = x;
            sh->Size = n + 1;
            kept = true;
        }
        Volatile.Write(ref sh->Busy, 0);
        if (!kept) batch[taken++] = x;
        FlushToCpu(batch, taken);
    }

    /// <summary>kmem_cache_free through the CPU layer: push if the object's slab is the CPU slab, else __slab_free.</summary>
    private void FreeCpu(PageFrame* slab, nint x)
    {
        int pfn = (int)_map.PageToPfn(slab);
        KmemCacheCpu* c = _cpu + Cpu.Current(_nrCpus);
        if (Interlocked.CompareExchange(ref c->Lock, 1, 0) == 0)
        {
            if (c->Slab == pfn)
            {
                SetFreePointer(x, c->Freelist);
                c->Freelist = x;
                c->Frees++;
                Volatile.Write(ref c->Lock, 0);
                return;
            }
            Volatile.Write(ref c->Lock, 0);
        }
        SlabFree(slab, x, x, 1);
    }

    /// <summary>The slab (head page) of an object known to be in one of this cache's slabs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PageFrame* SlabOf(nint x) => HeadPage(_mapBase, (nuint)((byte*)x - _window));

    /// <summary>
    /// Give free objects (validated, free-marked: from a sheaf) back to the CPU layer: runs in the CPU slab are pushed
    /// on c->freelist under one CPU-lock round trip; a run from another slab goes to __slab_free as one chain
    /// (build_detached_freelist). Takes the CPU lock; never called inside a sheaf window.
    /// </summary>
    internal void FlushToCpu(nint* objs, int n)
    {
        int i = 0;
        while (i < n)
        {
            KmemCacheCpu* c = LockCpu(Cpu.Current(_nrCpus));
            int cpuSlab = c->Slab;
            nint fl = c->Freelist;
            int pushed = 0;
            for (; i < n; i++)
            {
                nint x = objs[i];
                if ((int)_map.PageToPfn(SlabOf(x)) != cpuSlab) break;
                SetFreePointer(x, fl);
                fl = x;
                pushed++;
            }
            c->Freelist = fl;
            c->Frees += pushed;
            Volatile.Write(ref c->Lock, 0);
            if (i == n) break;
            nint head = objs[i++];
            PageFrame* slab = SlabOf(head);
            nint tail = head;
            int cnt = 1;
            for (; i < n && SlabOf(objs[i]) == slab; i++, cnt++)
            {
                SetFreePointer(objs[i], head);
                head = objs[i];
            }
            SlabFree(slab, head, tail, cnt);
        }
    }

    /// <summary>Empty every thread's sheaf of this cache into the CPU layer (flush_all's first step; section 5).</summary>
    public void DrainSheaves()
    {
        if (_slot != 0) ThreadSheaves.Drain(_slot, this);
    }

    /// <summary>The cold path of a free that failed a cheap check: classify, report, or (a live object whose data only looked like a link) free it.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeChecked(PageFrame* slab, nint x)
    {
        nint off = x - SlabBase(slab) - _bias;
        if (off < 0 || off % _size != 0 || off >= slab->Objects * _size)
            _owner.ThrowSlabError(this, slab, (void*)x, $"Invalid object pointer 0x{_owner.Kva((void*)x)}", off);
        if ((slab->Mapping & RcuPending) != 0 || OnAnyFreelist(slab, x))
            _owner.ThrowSlabError(this, slab, (void*)x, "Object already free", off);
        if (_debug) DebugOnFree(x);
        SlabFree(slab, x, x, 1);
    }

    /// <summary>on_freelist over every list an object of <paramref name="slab"/> can be on, with all CPU locks then the slab lock held.</summary>
    private bool OnAnyFreelist(PageFrame* slab, nint x)
    {
        // Objects in thread sheaves are on no freelist: put them back first. If that emptied the slab and it went
        // back to the page allocator, every object in it was free, x included.
        DrainSheaves();
        if ((slab->Flags & PageFlags.Slab) == 0 || slab->SlabCache != Id) return true;
        int pfn = (int)_map.PageToPfn(slab);
        for (int i = 0; i < _nrCpus; i++) LockCpu(i);
        SlabLock(slab);
        bool found = false;
        try
        {
            for (int i = 0; i < _nrCpus && !found; i++)
                if (_cpu[i].Slab == pfn) found = WalkFor(_cpu[i].Freelist, x, slab->Objects);
            if (!found) found = WalkFor(slab->Freelist, x, slab->Objects);
        }
        finally
        {
            SlabUnlock(slab);
            for (int i = _nrCpus - 1; i >= 0; i--) Volatile.Write(ref _cpu[i].Lock, 0);
        }
        return found;
    }

    private bool WalkFor(nint p, nint x, int max)
    {
        for (int n = 0; p != 0 && n <= max; n++, p = GetFreePointer(p))
            if (p == x) return true;
        return false;
    }

    /// <summary>
    /// __slab_free: put a chain head..tail of <paramref name="cnt"/> objects on the slab's own freelist and fix the
    /// slab's list membership. Takes list_lock first whenever the transition may need list work (lock order).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void SlabFree(PageFrame* slab, nint head, nint tail, int cnt)
    {
        Interlocked.Add(ref _slowFrees, cnt);
        bool haveList = false;
        nint prior;
        bool wasFrozen, onNode;
        int inuse;
        while (true)
        {
            SlabLock(slab);
            prior = slab->Freelist;
            wasFrozen = slab->Frozen;
            inuse = slab->Inuse - cnt;
            bool needList = !wasFrozen && (inuse == 0 || prior == 0) && !(_hasCpuPartial && prior == 0);
            if (needList && !haveList)
            {
                SlabUnlock(slab);
                ListLock();
                haveList = true;
                continue;
            }
            if (head == prior)
            {
                SlabUnlock(slab);
                if (haveList) ListUnlock();
                _owner.ThrowSlabError(this, slab, (void*)head, "Object already free", head - SlabBase(slab) - _bias);
            }
            SetFreePointer(tail, prior);
            slab->Freelist = head;
            slab->Inuse = (ushort)inuse;
            onNode = (slab->Mapping & OnNodePartial) != 0;
            SlabUnlock(slab);
            break;
        }
        if (wasFrozen)
        {
            if (haveList) ListUnlock();
            return;
        }
        if (prior == 0)
        {
            if (_hasCpuPartial)
            {
                if (haveList) ListUnlock();
                PutCpuPartial(slab);
                return;
            }
            // Was full, on no list (haveList is guaranteed here).
            if (inuse == 0 && _nrPartial >= Geometry.MinPartial)
            {
                ListUnlock();
                DiscardSlab(slab);
                return;
            }
            AddPartial(slab);
            ListUnlock();
            return;
        }
        if (inuse != 0 || !haveList)
        {
            if (haveList) ListUnlock();
            return;
        }
        // Empty now. On a CPU partial list: left for __put_partials. On the node list: freed beyond min_partial.
        if (!onNode || _nrPartial < Geometry.MinPartial)
        {
            ListUnlock();
            return;
        }
        RemovePartial(slab);
        ListUnlock();
        DiscardSlab(slab);
    }

    /// <summary>put_cpu_partial: queue a slab that just stopped being full on this CPU's partial list; drain it when over cpu_partial_slabs.</summary>
    private void PutCpuPartial(PageFrame* slab)
    {
        KmemCacheCpu* c = LockCpu(Cpu.Current(_nrCpus));
        int drain = PageFrame.None;
        if (c->PartialSlabs >= Geometry.CpuPartialSlabs)
        {
            drain = c->Partial;
            c->Partial = PageFrame.None;
            c->PartialSlabs = 0;
        }
        slab->Mapping |= OnCpuPartial;
        slab->Next = c->Partial;
        c->Partial = (int)_map.PageToPfn(slab);
        c->PartialSlabs++;
        Volatile.Write(ref c->Lock, 0);
        if (drain != PageFrame.None) PutPartials(drain);
    }

    /// <summary>__put_partials: move a detached CPU partial chain to the node list, discarding empty slabs beyond min_partial.</summary>
    private void PutPartials(int pfn)
    {
        int discard = PageFrame.None;
        ListLock();
        while (pfn != PageFrame.None)
        {
            PageFrame* slab = _map.PfnToPage(pfn);
            int next = slab->Next;
            slab->Next = PageFrame.None;
            slab->Mapping &= ~OnCpuPartial;
            if (slab->Inuse == 0 && _nrPartial >= Geometry.MinPartial)
            {
                slab->Next = discard;
                discard = pfn;
            }
            else AddPartial(slab);
            pfn = next;
        }
        ListUnlock();
        DiscardSlabChain(discard);
    }

    /// <summary>
    /// deactivate_slab: give back a CPU slab already detached from its CPU (c->slab and c->freelist cleared under the
    /// CPU lock, which is no longer held): its CPU freelist goes onto the slab, the slab onto the node partial list,
    /// or back to the page allocator when empty beyond min_partial (after list_lock is dropped).
    /// </summary>
    private void DeactivateSlab(PageFrame* slab, nint fl)
    {
        int n = 0;
        nint tail = 0;
        for (nint p = fl; p != 0; p = GetFreePointer(p)) { tail = p; n++; }
        bool discard = false;
        ListLock();
        SlabLock(slab);
        if (n != 0)
        {
            SetFreePointer(tail, slab->Freelist);
            slab->Freelist = fl;
        }
        slab->Inuse = (ushort)(slab->Inuse - n);
        slab->Frozen = false;
        int inuse = slab->Inuse;
        bool hasFree = slab->Freelist != 0;
        SlabUnlock(slab);
        if (inuse == 0 && _nrPartial >= Geometry.MinPartial) discard = true;
        else if (hasFree) AddPartial(slab);
        ListUnlock();
        if (discard) DiscardSlab(slab);
    }

    /// <summary>Discard a chain of slabs linked through Next (built under list_lock, discarded after dropping it); returns how many.</summary>
    private int DiscardSlabChain(int pfn)
    {
        int n = 0;
        while (pfn != PageFrame.None)
        {
            PageFrame* slab = _map.PfnToPage(pfn);
            pfn = slab->Next;
            slab->Next = PageFrame.None;
            DiscardSlab(slab);
            n++;
        }
        return n;
    }

    /// <summary>discard_slab / free_slab: back to the page allocator, or after a grace period for SLAB_TYPESAFE_BY_RCU.</summary>
    private void DiscardSlab(PageFrame* slab)
    {
        int objects = slab->Objects;
        int order = slab->Order;
        Interlocked.Decrement(ref _nrSlabs);
        Interlocked.Add(ref _totalObjects, -objects);
        _owner.Stat.Add(_statItem, -(1L << order));
        if ((Flags & SlabFlags.TypesafeByRcu) != 0)
        {
            ListLock();
            // Stamp in the high bits of the state word; Private stays the (unlocked) slab lock.
            slab->Mapping = RcuPending | (nint)(_owner.Rcu.Stamp() << 8);
            slab->Next = _rcuHead;
            _rcuHead = (int)_map.PageToPfn(slab);
            ListUnlock();
            return;
        }
        FreeSlabPages(slab, order);
    }

    private void FreeSlabPages(PageFrame* slab, int order)
    {
        slab->Flags &= ~PageFlags.Slab;
        slab->SlabCache = 0;
        slab->MapCount = -1;
        slab->Freelist = 0;
        slab->ObjectsFrozen = 0;
        slab->Inuse = 0;
        slab->Private = 0;
        slab->Mapping = 0;
        slab->Next = slab->Prev = PageFrame.None;
        _pages.FreePages(slab, order);
    }

    /// <summary>Free the slabs whose grace period has passed (all of them, waiting, when <paramref name="wait"/>).</summary>
    internal void ProcessRcuFrees(bool wait)
    {
        if (wait && _rcuHead != PageFrame.None) _owner.Rcu.Synchronize();
        long done = _owner.Rcu.Poll();
        int ready = PageFrame.None;
        ListLock();
        int pfn = _rcuHead;
        int prevPfn = PageFrame.None;
        while (pfn != PageFrame.None)
        {
            PageFrame* slab = _map.PfnToPage(pfn);
            int next = slab->Next;
            if ((long)(slab->Mapping >> 8) <= done)
            {
                if (prevPfn == PageFrame.None) _rcuHead = next;
                else _map.PfnToPage(prevPfn)->Next = next;
                slab->Next = ready;
                ready = pfn;
            }
            else prevPfn = pfn;
            pfn = next;
        }
        ListUnlock();
        while (ready != PageFrame.None)
        {
            PageFrame* slab = _map.PfnToPage(ready);
            ready = slab->Next;
            FreeSlabPages(slab, slab->Order);
        }
    }

    // =====================================================================================================
    // Bulk
    // =====================================================================================================

    /// <summary>kmem_cache_alloc_bulk: fill <paramref name="objects"/>; returns its length, or 0 (nothing allocated) on failure.</summary>
    /// <remarks>
    /// From the calling thread's sheaf in one window (one [ThreadStatic] load per call), the rest from the CPU layer in
    /// one CPU-lock round trip. The objects are copied out and their link words cleared in the same pass.
    /// </remarks>
    public int AllocBulk(Gfp gfp, Span<nint> objects)
    {
        int n = objects.Length;
        if (n == 0) return 0;
        ref nint dst = ref MemoryMarshal.GetReference(objects);
        nint offset = _offset;
        int i = 0;
        Sheaf* sh = ThreadSheaves.Current(_sheafOffset);
        if (sh != null)
        {
            Volatile.Write(ref sh->Busy, 1);
            int size = Volatile.Read(ref sh->Size);
            if ((size & Sheaf.StopBit) == 0)
            {
                i = Math.Min(n, size);
                size -= i;
                nint* src = sh->Objects + size;
                for (int j = 0; j < i; j++)
                {
                    nint obj = src[j];
                    Unsafe.Add(ref dst, j) = obj;
                    *(nint*)(obj + offset) = 0; // a live object never looks free
                }
                sh->Close(size);
            }
            else Volatile.Write(ref sh->Busy, 0);
        }
        if (i < n && !AllocBulkFromCpu(gfp, objects, i)) return 0;
        if (_debug || (gfp & Gfp.Zero) != 0)
            foreach (nint obj in objects)
            {
                if (_debug) DebugOnAlloc(obj);
                if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear((void*)obj, (nuint)ObjectSize);
            }
        return n;
    }

    /// <summary>
    /// The rest of a bulk allocation, objects[have..], from the CPU layer. On failure everything, the first
    /// <paramref name="have"/> (live) included, goes back and <paramref name="objects"/> is cleared.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool AllocBulkFromCpu(Gfp gfp, Span<nint> objects, int have)
    {
        int n = objects.Length;
        fixed (nint* dst = objects)
        {
            int got = AllocFromCpu(gfp, dst + have, n - have);
            if (got < n - have)
            {
                FlushToCpu(dst + have, got); // still free-marked: straight back
                for (int j = 0; j < have; j++) SetFreePointer(dst[j], 0);
                if (have != 0) FlushToCpu(dst, have);
                objects.Clear();
                return false;
            }
            for (int j = have; j < n; j++) *(nint*)(dst[j] + _offset) = 0;
        }
        return true;
    }

    /// <summary>
    /// kmem_cache_free_bulk: runs of objects that pass the fast-path checks go onto the calling thread's sheaf, one
    /// window per run; an object that fails one, or finds the sheaf full, takes <see cref="Free"/> (which reports or
    /// flushes), and the rest continue. A bad pointer ends the call with its report: the objects before it are freed,
    /// it and those after it are untouched (still the caller's).
    /// </summary>
    public void FreeBulk(ReadOnlySpan<nint> objects)
    {
        ref nint objs = ref MemoryMarshal.GetReference(objects);
        int len = objects.Length;
        int i = 0;
        while (i < len)
        {
            i += FreeRunToSheaf(ref Unsafe.Add(ref objs, i), len - i);
            if (i < len) Free((void*)Unsafe.Add(ref objs, i++));
        }
    }

    /// <summary>
    /// Check, free-mark and push onto the calling thread's sheaf the longest prefix of <paramref name="objs"/> that
    /// passes the fast-path checks and fits; returns its length (0 without a usable sheaf).
    /// </summary>
    /// <remarks>
    /// The checks and marking (<see cref="MarkFreeRun"/>) run before the window opens: they touch only the objects,
    /// which the caller owns. Room is read before the window too; only the owner grows Size, so it can only be
    /// larger by the time the window opens (a drainer empties it). If a drainer owns the sheaf meanwhile, the marked
    /// objects, valid and free-marked as sheaf objects are, go to the CPU layer instead.
    /// </remarks>
    private int FreeRunToSheaf(ref nint objs, int n)
    {
        Sheaf* sh = ThreadSheaves.Current(_sheafOffset);
        if (sh == null) return 0;
        int room = _sheafCap - (Volatile.Read(ref sh->Size) & ~Sheaf.StopBit);
        int marked = MarkFreeRun(ref objs, Math.Min(n, room));
        if (marked == 0) return 0;
        fixed (nint* p = &objs) // the caller's span may be a managed array
        {
            Volatile.Write(ref sh->Busy, 1);
            int size = Volatile.Read(ref sh->Size);
            if ((size & Sheaf.StopBit) == 0)
            {
                Buffer.MemoryCopy(p, sh->Objects + size, marked * sizeof(nint), marked * sizeof(nint));
                sh->Close(size + marked);
                return marked;
            }
            Volatile.Write(ref sh->Busy, 0);
            FlushToCpu(p, marked);
        }
        return marked;
    }

    /// <summary>
    /// <see cref="FreeObject"/>'s checks over the longest valid prefix of <paramref name="objs"/> (at most
    /// <paramref name="n"/>), free-marking each object that passes; returns the prefix length. Consecutive objects of
    /// one slab (kmem_cache_alloc_bulk hands out runs of one slab) share virt_to_page and the slab checks, as
    /// build_detached_freelist groups by slab.
    /// </summary>
    private int MarkFreeRun(ref nint objs, int n)
    {
        byte* window = _window;
        PageFrame* mapBase = _mapBase;
        nint offset = _offset, random = _random;
        ulong divisible = _divisible;
        int i = 0;
        while (i < n)
        {
            nint x = Unsafe.Add(ref objs, i);
            nuint at = (nuint)((byte*)x - window);
            if (at >= _directBytes) return i;
            PageFrame* slab = HeadPage(mapBase, at);
            if (slab->SlabCache != Id) return i; // nonzero only on a slab's head page, as in Free
            nint objBase = SlabBase(window, mapBase, slab) + _bias;
            nuint span = slab->Objects * _sizeN;
            if ((nuint)(x - objBase) >= span) return i; // in the slab's pages, past its last object
            // The run of this slab: x - objBase < span also tells the next object is still in it.
            do
            {
                nint off = x - objBase;
                if ((ulong)off * divisible >= divisible) return i;
                nint link = x + offset;
                nint key = random ^ (nint)BinaryPrimitives.ReverseEndianness((ulong)link);
                if (LooksFree(*(nint*)link ^ key, objBase, span)) return i;
                *(nint*)link = key; // encoded null: free-marked, as in a sheaf
                if (++i == n) return i;
                x = Unsafe.Add(ref objs, i);
            }
            while ((nuint)(x - objBase) < span);
        }
        return i;
    }

    // =====================================================================================================
    // Shrink, flush, destroy
    // =====================================================================================================

    /// <summary>flush_all: every CPU's slab and partial list go back to the node.</summary>
    public void FlushAll()
    {
        DrainSheaves();
        for (int i = 0; i < _nrCpus; i++)
        {
            // Detach under the CPU lock; deactivate and put back without it (no page allocator call under a slab lock).
            KmemCacheCpu* c = LockCpu(i);
            int slab = c->Slab;
            nint freelist = c->Freelist;
            c->Slab = PageFrame.None;
            c->Freelist = 0;
            int partial = c->Partial;
            c->Partial = PageFrame.None;
            c->PartialSlabs = 0;
            Volatile.Write(ref c->Lock, 0);
            if (slab != PageFrame.None) DeactivateSlab(_map.PfnToPage(slab), freelist);
            if (partial != PageFrame.None) PutPartials(partial);
        }
    }

    /// <summary>kmem_cache_shrink: flush the CPUs and give every empty slab back. Returns the slabs freed.</summary>
    public int Shrink()
    {
        FlushAll();
        int freed = 0;
        int discard = PageFrame.None;
        ListLock();
        for (int pfn = _partialHead; pfn != PageFrame.None;)
        {
            PageFrame* slab = _map.PfnToPage(pfn);
            int next = slab->Next;
            if (slab->Inuse == 0)
            {
                RemovePartial(slab);
                slab->Next = discard;
                discard = pfn;
            }
            pfn = next;
        }
        ListUnlock();
        freed += DiscardSlabChain(discard);
        ProcessRcuFrees(false);
        return freed;
    }

    /// <summary>__kmem_cache_shutdown: true when no slab is left (then the per-CPU memory is released).</summary>
    internal bool Shutdown()
    {
        Shrink();
        if (Interlocked.Read(ref _nrSlabs) != 0) return false;
        ProcessRcuFrees(true);
        return true;
    }

    internal void ReleaseNative()
    {
        if (_cpu != null)
        {
            if (_slot != 0) ThreadSheaves.Unregister(_slot);
            NativeMemory.AlignedFree(_cpu);
            _cpu = null;
        }
    }

    // =====================================================================================================
    // Counters and views
    // =====================================================================================================

    /// <summary>Slabs of this cache (node nr_slabs).</summary>
    public long NumSlabs => Interlocked.Read(ref _nrSlabs);
    /// <summary>Objects in those slabs (node total_objects).</summary>
    public long NumObjects => Interlocked.Read(ref _totalObjects);
    /// <summary>Free objects held in threads' sheaves (exact when no alloc/free is running).</summary>
    public long SheafObjects => _slot != 0 ? ThreadSheaves.Held(_slot) : 0;

    /// <summary>Does this cache put a sheaf in front of its CPU layer? (Not the debug caches.)</summary>
    public bool HasSheaves => _slot != 0;

    /// <summary>Slabs on the node partial list.</summary>
    public int NrPartial => Volatile.Read(ref _nrPartial);

    /// <summary>Objects handed out and not yet freed (exact when no alloc/free is running).</summary>
    public long LiveObjects
    {
        get
        {
            long n = -Interlocked.Read(ref _slowFrees) - (_slot != 0 ? ThreadSheaves.Held(_slot) : 0);
            for (int i = 0; i < _nrCpus; i++) n += Volatile.Read(ref _cpu[i].Allocs) - Volatile.Read(ref _cpu[i].Frees);
            return n;
        }
    }

    /// <summary>The slabinfo numbers as SLUB's get_slabinfo: free objects are counted on the node partial list only.</summary>
    public (long ActiveObjs, long NumObjs, long ActiveSlabs, long NumSlabs) SlabInfo()
    {
        long free = 0;
        ListLock();
        for (int pfn = _partialHead; pfn != PageFrame.None; pfn = _map.PfnToPage(pfn)->Next)
        {
            PageFrame* s = _map.PfnToPage(pfn);
            free += s->Objects - s->Inuse;
        }
        ListUnlock();
        long objs = NumObjects, slabs = NumSlabs;
        return (objs - free, objs, slabs, slabs);
    }

    /// <summary>Check list and counter invariants (quiescent cache); null when they hold.</summary>
    public string? CheckInvariants()
    {
        ListLock();
        try
        {
            int n = 0;
            for (int pfn = _partialHead, prev = PageFrame.None; pfn != PageFrame.None; prev = pfn, pfn = _map.PfnToPage(pfn)->Next)
            {
                PageFrame* s = _map.PfnToPage(pfn);
                if (s->Prev != prev) return $"{Name}: partial list back link broken at pfn {pfn}";
                if ((s->Flags & PageFlags.Slab) == 0 || s->SlabCache != Id) return $"{Name}: pfn {pfn} on the partial list is not a slab of this cache";
                if (s->Frozen || (s->Mapping & OnNodePartial) == 0) return $"{Name}: node-partial slab pfn {pfn} is frozen or unmarked";
                if (s->Inuse >= s->Objects) return $"{Name}: full slab pfn {pfn} on the partial list";
                int free = 0;
                for (nint p = s->Freelist; p != 0 && free <= s->Objects; p = GetFreePointer(p)) free++;
                if (free != s->Objects - s->Inuse) return $"{Name}: slab pfn {pfn} has {free} free objects on its freelist, counters say {s->Objects - s->Inuse}";
                n++;
            }
            if (n != _nrPartial) return $"{Name}: nr_partial {_nrPartial} but {n} slabs on the list";
        }
        finally { ListUnlock(); }
        return null;
    }

    // =====================================================================================================
    // Locks and lists
    // =====================================================================================================

    /// <summary>Is CPU <paramref name="cpu"/>'s lock of this cache held right now? (Tests: nothing may hold it across the page allocator.)</summary>
    internal bool CpuLockHeld(int cpu) => Volatile.Read(ref _cpu[cpu].Lock) != 0;

    private KmemCacheCpu* LockCpu(int cpu)
    {
        KmemCacheCpu* c = _cpu + cpu;
        if (Interlocked.CompareExchange(ref c->Lock, 1, 0) != 0)
        {
            var spin = new SpinWait();
            do spin.SpinOnce(); while (Interlocked.CompareExchange(ref c->Lock, 1, 0) != 0);
        }
        return c;
    }

    private void ListLock()
    {
        if (Interlocked.CompareExchange(ref _listLock, 1, 0) != 0)
        {
            var spin = new SpinWait();
            do spin.SpinOnce(); while (Interlocked.CompareExchange(ref _listLock, 1, 0) != 0);
        }
    }

    private void ListUnlock() => Volatile.Write(ref _listLock, 0);

    /// <summary>slab_lock: a spin lock in the head page's <c>private</c> word (Linux: a bit spin lock on the slab).</summary>
    private static void SlabLock(PageFrame* slab)
    {
        if (Interlocked.CompareExchange(ref slab->Private, 1, 0) != 0)
        {
            var spin = new SpinWait();
            do spin.SpinOnce(); while (Interlocked.CompareExchange(ref slab->Private, 1, 0) != 0);
        }
    }

    private static void SlabUnlock(PageFrame* slab) => Volatile.Write(ref slab->Private, 0);

    /// <summary>add_partial at the tail (list_lock held).</summary>
    private void AddPartial(PageFrame* slab)
    {
        int pfn = (int)_map.PageToPfn(slab);
        slab->Mapping |= OnNodePartial;
        slab->Next = PageFrame.None;
        slab->Prev = _partialTail;
        if (_partialTail != PageFrame.None) _map.PfnToPage(_partialTail)->Next = pfn;
        else _partialHead = pfn;
        _partialTail = pfn;
        _nrPartial++;
    }

    /// <summary>remove_partial (list_lock held).</summary>
    private void RemovePartial(PageFrame* slab)
    {
        if (slab->Prev != PageFrame.None) _map.PfnToPage(slab->Prev)->Next = slab->Next;
        else _partialHead = slab->Next;
        if (slab->Next != PageFrame.None) _map.PfnToPage(slab->Next)->Prev = slab->Prev;
        else _partialTail = slab->Prev;
        slab->Next = slab->Prev = PageFrame.None;
        slab->Mapping &= ~OnNodePartial;
        _nrPartial--;
    }

    // =====================================================================================================
    // Debug metadata (SLAB_RED_ZONE, SLAB_POISON, SLAB_STORE_USER): layout and bytes; the checks come later
    // =====================================================================================================

    public const byte RedInactive = 0xbb, RedActive = 0xcc, PoisonFree = 0x6b, PoisonEnd = 0xa5;

    /// <summary>init_object: poison (objects that may be poisoned) and red zones.</summary>
    private void DebugInitObject(nint obj, bool active)
    {
        byte* p = (byte*)obj;
        byte red = active ? RedActive : RedInactive;
        if (!active && (Flags & SlabFlags.Poison) != 0 && (Flags & SlabFlags.TypesafeByRcu) == 0 && Ctor == null)
        {
            new Span<byte>(p, ObjectSize - 1).Fill(PoisonFree);
            p[ObjectSize - 1] = PoisonEnd;
        }
        if ((Flags & SlabFlags.RedZone) != 0)
        {
            new Span<byte>(p - _bias, (int)_bias).Fill(red);
            new Span<byte>(p + ObjectSize, Inuse - ObjectSize).Fill(red);
        }
    }

    private int TrackOffset => Geometry.FreePointerOutside ? Inuse + SlabGeometry.PointerSize : Inuse;

    private void DebugOnAlloc(nint obj)
    {
        DebugInitObject(obj, active: true);
        if ((Flags & SlabFlags.StoreUser) != 0) SetTrack(obj, 0);
    }

    private void DebugOnFree(nint obj)
    {
        DebugInitObject(obj, active: false);
        if ((Flags & SlabFlags.StoreUser) != 0) SetTrack(obj, 1);
    }

    /// <summary>set_track: struct track { addr, handle, cpu, pid, when } at the alloc (0) or free (1) slot.</summary>
    private void SetTrack(nint obj, int which)
    {
        byte* t = (byte*)obj + TrackOffset + which * SlabGeometry.TrackSize;
        *(ulong*)t = 0;                                  // addr: no caller address in a managed runtime
        *(uint*)(t + 8) = 0;                             // stack depot handle
        *(int*)(t + 12) = Cpu.Current(_nrCpus);
        *(int*)(t + 16) = Environment.CurrentManagedThreadId;
        *(long*)(t + 24) = Environment.TickCount64;      // "jiffies" at HZ=1000
    }

    /// <summary>The slot of object <paramref name="i"/> of a slab (for tests and tools).</summary>
    public nint ObjectAt(PageFrame* slab, int i) => SlabBase(slab) + _bias + i * _size;

    internal string DescribeSlab(PageFrame* slab) =>
        $"Slab 0x{_owner.Kva(slab)} objects={slab->Objects} used={slab->Inuse} fp=0x{_owner.Kva((void*)slab->Freelist)} flags=0x{(ulong)slab->Flags:x}({PageAllocator.FormatPageFlags(slab->Flags)})";

    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append($"{Name}: object_size={ObjectSize} size={_size} align={Geometry.Align} order={_order} objs_per_slab={_objects}");
        sb.Append($" offset={_offset} inuse={Inuse} min_partial={Geometry.MinPartial} cpu_partial={Geometry.CpuPartial}");
        return sb.ToString();
    }
}
