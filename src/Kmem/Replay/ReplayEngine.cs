using System.Diagnostics;
using System.Runtime.CompilerServices;
using Kmem.PageAlloc;
using Kmem.Physical;
using Kmem.Tracing;

namespace Kmem.Replay;

/*
 * ReplayEngine: drives a booted machine with a real Linux kmem trace.
 *
 * 1. Concepts. Each allocation event of the trace becomes the same call on kmem (mm_page_alloc → alloc_pages with the
 *    trace's order and gfp; kmalloc → kmalloc(bytes_req, gfp); kmem_cache_alloc → kmem_cache_alloc on a cache named
 *    as in the trace, created on first use with bytes_alloc as its object size; alloc_vmap_area → vmalloc of the
 *    area without its guard page), and each free event frees what kmem returned for the same trace pointer.
 *    ReplayMode says which events take part (slab pages are both slab and page events in Linux; see ReplayMode).
 *
 * 2. Tables. Trace identities map to kmem's allocations: slab ptr → (our pointer, cache, call site, bytes);
 *    pfn → (our page, order); va_start → (our vmalloc address). Open-addressing tables in native memory
 *    (PointerTable), presized at start; they hold only the live allocations, so memory is bounded by the live set,
 *    not the trace length. Call sites and named caches are found and counted through arrays indexed by the reader's
 *    string ids (dense, bounded by the kernel's symbols and caches); kmalloc size classes through an array indexed
 *    by bytes_alloc / 8 up to KMALLOC_MAX_CACHE_SIZE (a dictionary only for kmalloc_large sizes).
 *
 * 3. Window edges. A trace starts in the middle of a running system: frees of pointers it never saw allocated
 *    (including frees whose allocation was skipped by the mode) are counted and skipped; kfree(NULL) is a no-op
 *    (counted apart); an allocation of a pointer still live in the table (its free was lost) frees the old one first
 *    (counted as lost_frees). Allocations live at the end are reported (by cache, by call site) and then freed,
 *    unless KeepLive is set.
 *
 * 4. Errors. A null return is an allocation failure (counted per event kind). A KmemException from kmem (a bad
 *    free, an order kmem refuses) is an allocator error: counted, the first few kept with the trace line, and the
 *    replay goes on. Anything else is a bug and propagates.
 *
 * 5. Size-class fidelity. For every replayed kmalloc, ksize(our object) is compared with the trace's bytes_alloc;
 *    a difference is a size-class mismatch (kmem's kmalloc caches differ from Linux's).
 *
 * 6. Speed. The loop is one switch per event over a struct the reader fills without allocating; counters are fields
 *    and arrays. With ParseAhead (the default, on more than one core) the reader runs on its own thread and hands
 *    events over in batches (EventPipeline), so parsing and replaying overlap; the reader also decompresses one chunk
 *    ahead on a third thread. No per-event managed allocation once the tables are warm. Three threads on two cores
 *    balance: per event, parsing and replaying cost ~0.3-0.35 us of CPU each and decompression (libzstd) ~0.15-0.25,
 *    so no thread needs more than its share of the two cores. Decompressing on the parse thread instead (two
 *    threads) would put the most work on one thread; measured, it was slower (docs/benchmarks.md). ReplayBatch
 *    prefetches the table slot of the event a few places ahead, since table lookups were the loop's largest stalls.
 */

/// <summary>Replays Linux kmem traces through a booted <see cref="Machine"/>. Single-threaded; one engine per replay.</summary>
public sealed unsafe class ReplayEngine : IDisposable
{
    /// <summary>KMALLOC_MAX_CACHE_SIZE on x86-64 (PAGE_SIZE * 2): larger kmallocs are compound pages (kmalloc_large).</summary>
    public const long KmallocMaxCacheSize = 2 * ArchProfile.PageSize;

    // The bits a slab page's gfp may carry (mm/slub.c allocate_slab: flags & (GFP_RECLAIM_MASK | GFP_CONSTRAINT_MASK),
    // then | s->allocflags (__GFP_COMP, GFP_DMA/GFP_DMA32, __GFP_RECLAIMABLE), then | __GFP_NOWARN | __GFP_NORETRY for
    // the first, higher-order attempt, and | __GFP_NOMEMALLOC when that attempt may reclaim).
    private const Gfp GfpReclaimMask = Gfp.DirectReclaim | Gfp.KswapdReclaim | Gfp.High | Gfp.Io | Gfp.Fs | Gfp.NoWarn |
        Gfp.RetryMayFail | Gfp.NoFail | Gfp.NoRetry | Gfp.MemAlloc | Gfp.NoMemAlloc;
    private const Gfp SlabPageAllowed = GfpReclaimMask | Gfp.HardWall | Gfp.ThisNode | Gfp.Comp | Gfp.Dma | Gfp.Dma32 | Gfp.Reclaimable;
    private const Gfp SlabPageRequired = Gfp.Comp | Gfp.NoWarn | Gfp.NoRetry;

    /// <summary>
    /// Does <paramref name="gfp"/> look like a slab page's? It carries __GFP_COMP | __GFP_NOWARN | __GFP_NORETRY (the
    /// first attempt of allocate_slab) and nothing outside GFP_RECLAIM_MASK | GFP_CONSTRAINT_MASK | the cache's
    /// allocflags; in particular no __GFP_ZERO, __GFP_ACCOUNT, __GFP_MOVABLE or __GFP_HIGHMEM, which slab strips or
    /// forbids and page-cache, page-table and user pages carry. A slab page of the fallback (minimum order) attempt
    /// without __GFP_NORETRY is missed: rare (the first attempt failed), and it is then replayed as a page.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsSlabPageGfp(Gfp gfp) => (gfp & SlabPageRequired) == SlabPageRequired && (gfp & ~SlabPageAllowed) == 0;

    private readonly Machine _m;
    private readonly PageAllocator _pages;
    private readonly IReplayObjects? _objects;
    private readonly ReplayOptions _opt;
    private readonly bool _doObjects, _filterSlabPages;

    private struct LiveObject
    {
        public nint Ours;
        public int CacheHandle;   // -1: kmalloc
        public int CacheStatId;   // index into _caches
        public int SiteId;
        public int Bytes;         // kmem's size (ksize for kmalloc, object size for caches); trace's when unknown
    }

    private struct LivePage
    {
        public nint Page;
        public int Order;
    }

    private struct LiveVmap
    {
        public nint Ours;
        public long Bytes;
        public int SiteId;
    }

    private readonly PointerTable<LiveObject> _live;
    private readonly PointerTable<LivePage> _livePages;
    private readonly PointerTable<LiveVmap> _liveVmaps = new(256);
    private readonly PointerTable<byte> _skippedPfns;   // object allocators' own pages (slab, kmalloc_large), live
    private readonly int[] _kmallocSmallStat = new int[(int)(KmallocMaxCacheSize / 8) + 1]; // bytes_alloc/8 → stat id + 1
    private readonly Dictionary<long, int> _kmallocLargeStat = [];
    // Trace cache name id → our handle + 2 (0: not created yet; 1: creation failed).
    private int[] _cacheHandleByName = new int[64];
    private int[] _cacheStatOfHandle = new int[16];

    // Per string id (call sites).
    private SiteStat[] _sites = new SiteStat[256];
    // Per cache statistics (kmalloc size classes and named caches).
    private readonly List<CacheStat> _caches = [];

    // Last event per trace CPU, to pair kmalloc_large with its mm_page_alloc.
    private ulong[] _lastPagePfn = new ulong[64];
    private long[] _lastPageSeq = new long[64];
    private int[] _lastPageOrder = new int[64];

    private readonly long[] _seen = new long[EventKindExtensions.Count];
    private readonly long[] _replayed = new long[EventKindExtensions.Count];
    private readonly long[] _skipped = new long[EventKindExtensions.Count];
    private readonly long[] _failures = new long[EventKindExtensions.Count];
    private readonly List<string> _errorSamples = [];
    private readonly List<string> _violationSamples = [];
    private long _seq;

    private TraceStringTable _strings = new();

    internal struct SiteStat
    {
        public long Allocs, Bytes, LiveObjects, LiveBytes;
    }

    internal sealed class CacheStat(string name, bool kmalloc)
    {
        public string Name = name;
        public bool Kmalloc = kmalloc;
        public long Allocs, Frees, Live, LiveBytes, PeakLive, PeakLiveBytes, ObjectSize;
    }

    /// <summary>An engine over <paramref name="machine"/>; <paramref name="objects"/> null replays page events only.</summary>
    public ReplayEngine(Machine machine, IReplayObjects? objects, ReplayOptions? options = null)
    {
        _m = machine ?? throw new ArgumentNullException(nameof(machine));
        _pages = machine.Pages;
        _objects = objects;
        _opt = options ?? new ReplayOptions();
        _doObjects = _opt.Mode != ReplayMode.Pages;
        _filterSlabPages = _opt.Mode == ReplayMode.Objects;
        if (_opt.ParseAhead && Environment.ProcessorCount > 1)
            EventPipeline.Reserve();
        _live = new PointerTable<LiveObject>(_opt.InitialTableCapacity);
        _livePages = new PointerTable<LivePage>(_opt.InitialTableCapacity);
        _skippedPfns = new PointerTable<byte>(_opt.InitialTableCapacity);
    }

    /// <summary>Frees the pointer tables' native memory (not kmem's allocations: see <see cref="FreeAllLive"/>).</summary>
    public void Dispose()
    {
        _live.Dispose();
        _livePages.Dispose();
        _liveVmaps.Dispose();
        _skippedPfns.Dispose();
    }

    // ---------------------------------------------------------------- counters (read by the report)

    /// <summary>Events handed to the engine.</summary>
    public long Events { get; private set; }
    /// <summary>Events seen, by kind.</summary>
    public long Seen(EventKind k) => _seen[(int)k];
    /// <summary>Events replayed, by kind.</summary>
    public long Replayed(EventKind k) => _replayed[(int)k];
    /// <summary>Events not replayed (mode, unknown pointer, no object allocator), by kind.</summary>
    public long Skipped(EventKind k) => _skipped[(int)k];
    /// <summary>Allocation failures (null returns), by kind.</summary>
    public long Failures(EventKind k) => _failures[(int)k];
    /// <summary>kmalloc events whose kmem ksize differs from the trace's bytes_alloc.</summary>
    public long KmallocSizeClassMismatches { get; private set; }
    /// <summary>kmalloc events checked for size class (replayed and succeeded).</summary>
    public long KmallocSizeClassChecked { get; private set; }
    /// <summary>kmem_cache_alloc events whose cache object size differs from the trace's bytes_alloc.</summary>
    public long CacheSizeMismatches { get; private set; }
    /// <summary>KmemExceptions from kmem.</summary>
    public long AllocatorErrors { get; private set; }
    /// <summary>The first few allocator errors, each with its trace line.</summary>
    public IReadOnlyList<string> AllocatorErrorSamples => _errorSamples;
    /// <summary>Slab frees of pointers not in the table (allocated before the trace or skipped).</summary>
    public long UnknownFrees { get; private set; }
    /// <summary>kfree(NULL).</summary>
    public long NullFrees { get; private set; }
    /// <summary>Page frees of pfns not in the table.</summary>
    public long UnknownPageFrees { get; private set; }
    /// <summary>vmap frees of areas not in the table.</summary>
    public long UnknownVmapFrees { get; private set; }
    /// <summary>Allocations of a trace pointer still live (the free is missing from the trace).</summary>
    public long LostFrees { get; private set; }
    /// <summary>mm_page_alloc events recognised as slab pages (skipped in Objects mode).</summary>
    public long SlabPageAllocs { get; private set; }
    /// <summary>mm_page_alloc events recognised as kmalloc_large's pages (undone in Objects mode).</summary>
    public long KmallocLargePageAllocs { get; private set; }
    /// <summary>Events in atomic context (flags column).</summary>
    public long AtomicEvents { get; private set; }
    /// <summary>
    /// Events in atomic context that may sleep (an allocation with __GFP_DIRECT_RECLAIM, a vmalloc, or a call kmem
    /// refused with might_sleep's BUG): a bug in the traced kernel's caller, or a context the trace misreports.
    /// Replayed in process context.
    /// </summary>
    public long AtomicContextViolations { get; private set; }
    /// <summary>The first few atomic context violations, each with its trace line.</summary>
    public IReadOnlyList<string> AtomicContextViolationSamples => _violationSamples;
    /// <summary>Slab objects live now (replayed allocations not yet freed).</summary>
    public long LiveObjects => _live.Count;
    /// <summary>Page blocks live now.</summary>
    public long LivePageBlocks => _livePages.Count;
    /// <summary>vmalloc areas live now.</summary>
    public long LiveVmaps => _liveVmaps.Count;
    /// <summary>Bytes of live objects (kmem sizes).</summary>
    public long LiveObjectBytes { get; private set; }
    /// <summary>Bytes of live pages.</summary>
    public long LivePageBytes { get; private set; }
    /// <summary>Bytes of live vmalloc areas.</summary>
    public long LiveVmapBytes { get; private set; }
    /// <summary>Largest LiveObjectBytes + LivePageBytes + LiveVmapBytes seen.</summary>
    public long PeakLiveBytes { get; private set; }
    /// <summary>Objects live at that peak.</summary>
    public long PeakLiveObjects { get; private set; }
    /// <summary>Time spent in <see cref="Run"/> (reading included).</summary>
    public TimeSpan Elapsed { get; private set; }
    /// <summary>
    /// JIT compile time, on any thread, during <see cref="Run"/>: part of <see cref="Elapsed"/>'s CPU that is start-up,
    /// not replay (the CLI runs with tiered compilation off, so a method is compiled fully on its first call).
    /// </summary>
    public TimeSpan CompileTime { get; private set; }

    internal IReadOnlyList<CacheStat> Caches => _caches;
    internal TraceStringTable Strings => _strings;
    internal ReadOnlySpan<SiteStat> Sites => _sites;
    internal ReplayOptions Options => _opt;
    internal bool HasObjects => _objects != null;
    internal IReplayObjects? Objects => _objects;
    internal Machine Machine => _m;

    // ---------------------------------------------------------------- the loop

    /// <summary>Replays every event of <paramref name="reader"/>.</summary>
    public void Run(FtraceReader reader)
    {
        ArgumentNullException.ThrowIfNull(reader);
        _strings = reader.Strings;
        TimeSpan jit0 = System.Runtime.JitInfo.GetCompilationTime(currentThread: false);
        var sw = Stopwatch.StartNew();
        long limit = _opt.MaxEvents <= 0 ? long.MaxValue : _opt.MaxEvents;
        if (_opt.ParseAhead && Environment.ProcessorCount > 1)
        {
            using var pipe = new EventPipeline(reader, limit - Events);
            while (pipe.TryNext(out ReadOnlySpan<TraceEvent> batch))
                ReplayBatch(batch);
        }
        else
        {
            while (Events < limit && reader.TryRead(out TraceEvent ev))
                Replay(in ev);
        }
        sw.Stop();
        Elapsed += sw.Elapsed;
        CompileTime += System.Runtime.JitInfo.GetCompilationTime(currentThread: false) - jit0;
    }

    // How many events ahead ReplayBatch prefetches table slots: enough to cover a miss (~100-300 ns) at ~0.3 us
    // per event, few enough that the slot is still in L1 when its event comes.
    private const int PrefetchAhead = 4;

    /// <summary>
    /// Replays a run of events (as <see cref="Replay"/> does each), prefetching the pointer-table slot of the event
    /// <see cref="PrefetchAhead"/> places on: the live-object and live-page tables are megabytes of random keys, and
    /// their lookups were the replay loop's largest stalls.
    /// </summary>
    public void ReplayBatch(ReadOnlySpan<TraceEvent> events)
    {
        for (int i = 0; i < events.Length; i++)
        {
            if (i + PrefetchAhead < events.Length)
            {
                ref readonly TraceEvent next = ref events[i + PrefetchAhead];
                if (next.Kind is EventKind.MmPageAlloc or EventKind.MmPageFree)
                    _livePages.Prefetch(next.Pfn);
                else
                    _live.Prefetch(next.Ptr);
            }
            Replay(in events[i]);
        }
    }

    /// <summary>Replays one event. <see cref="TraceEvent"/> string ids must refer to the table given by <see cref="Run"/> (or <see cref="UseStrings"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Replay(in TraceEvent ev)
    {
        Events++;
        _seq++;
        _seen[(int)ev.Kind]++;
        try
        {
            if (ev.IsAtomic) ReplayAtomic(in ev);
            else Dispatch(in ev);
        }
        catch (KmemException e)
        {
            OnError(in ev, e);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Dispatch(in TraceEvent ev)
    {
            switch (ev.Kind)
            {
                case EventKind.Kmalloc: OnKmalloc(in ev); break;
                case EventKind.Kfree: OnFree(in ev); break;
                case EventKind.KmemCacheAlloc: OnCacheAlloc(in ev); break;
                case EventKind.KmemCacheFree: OnFree(in ev); break;
                case EventKind.MmPageAlloc: OnPageAlloc(in ev); break;
                case EventKind.MmPageFree: OnPageFree(in ev); break;
                case EventKind.AllocVmapArea: OnVmapAlloc(in ev); break;
                case EventKind.FreeVmapAreaNoflush: OnVmapFree(in ev); break;
                default: _skipped[(int)ev.Kind]++; break; // batched frees (also logged as mm_page_free), purges, vmscan, oom
            }
    }

    // An event whose flags column shows it could not sleep: run it in that context (preempt depth, softirq/hardirq,
    // bh or irqs off), so kmem's might_sleep/might_alloc checks see what Linux's saw. An allocation whose gfp may
    // block (__GFP_DIRECT_RECLAIM; alloc_vmap_area, which logs no gfp, counts as GFP_KERNEL) in such a context is
    // an atomic context violation in the trace itself: counted, and replayed in process context instead. So is a
    // call kmem refuses with might_sleep's BUG (a vfree under a spinlock), retried in process context: the checks
    // sit at the entry of kmem's functions, before any state changes.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReplayAtomic(in TraceEvent ev)
    {
        AtomicEvents++;
        bool mayBlock = ev.Kind switch
        {
            EventKind.Kmalloc or EventKind.KmemCacheAlloc or EventKind.MmPageAlloc => (ev.Gfp & Gfp.DirectReclaim) != 0,
            EventKind.AllocVmapArea => true,
            _ => false,
        };
        if (mayBlock)
        {
            OnAtomicViolation(in ev);
            Dispatch(in ev);
            return;
        }
        TraceContextFlags c = ev.Context;
        int pc = ev.PreemptDepth;
        if ((c & TraceContextFlags.Softirq) != 0) pc += Context.SoftirqOffset;
        if ((c & TraceContextFlags.BhOff) != 0) pc += Context.SoftirqDisableOffset;
        if ((c & TraceContextFlags.Hardirq) != 0) pc += Context.HardirqOffset;
        if ((c & TraceContextFlags.Nmi) != 0) pc += Context.NmiOffset;
        bool irqsOff = (c & (TraceContextFlags.IrqsOff | TraceContextFlags.Hardirq | TraceContextFlags.Nmi)) != 0;
        int saved = Context.EnterState(pc, irqsOff);
        try
        {
            Dispatch(in ev);
        }
        catch (SleepInAtomicException)
        {
            Context.RestoreState(saved);
            OnAtomicViolation(in ev);
            Dispatch(in ev);
        }
        finally
        {
            Context.RestoreState(saved);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void OnAtomicViolation(in TraceEvent ev)
    {
        AtomicContextViolations++;
        if (_violationSamples.Count < 8)
            _violationSamples.Add($"line {ev.Line} ({ev.Kind.TraceName()}, flags {FormatFlags(in ev)}, gfp {(ev.GfpTextId != 0 ? _strings[ev.GfpTextId] : ev.Gfp.ToString())})");
    }

    private static string FormatFlags(in TraceEvent ev)
    {
        TraceContextFlags c = ev.Context;
        bool irqs = (c & TraceContextFlags.IrqsOff) != 0, bh = (c & TraceContextFlags.BhOff) != 0;
        bool hard = (c & TraceContextFlags.Hardirq) != 0, soft = (c & TraceContextFlags.Softirq) != 0;
        return $"{(irqs && bh ? 'D' : irqs ? 'd' : bh ? 'b' : '.')}.{(hard && soft ? 'H' : hard ? 'h' : soft ? 's' : (c & TraceContextFlags.Nmi) != 0 ? 'z' : '.')}{(ev.PreemptDepth == 0 ? '.' : "0123456789abcdef"[ev.PreemptDepth & 0xf])}";
    }

    /// <summary>The string table events passed to <see cref="Replay"/> refer to.</summary>
    public void UseStrings(TraceStringTable strings) => _strings = strings ?? throw new ArgumentNullException(nameof(strings));

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void OnError(in TraceEvent ev, KmemException e)
    {
        AllocatorErrors++;
        if (_errorSamples.Count < 8)
            _errorSamples.Add($"line {ev.Line} ({ev.Kind.TraceName()}): {e.Message.Split('\n')[0]}");
    }

    // ---------------------------------------------------------------- slab

    private void OnKmalloc(in TraceEvent ev)
    {
        if (!_doObjects || _objects == null) { _skipped[(int)EventKind.Kmalloc]++; return; }
        if (ev.BytesAlloc > KmallocMaxCacheSize) UndoKmallocLargePage(in ev);
        DropLost(ev.Ptr);
        nint p = _objects.Kmalloc(ev.BytesReq, ev.Gfp);
        if (p == 0) { _failures[(int)EventKind.Kmalloc]++; return; }
        _replayed[(int)EventKind.Kmalloc]++;
        long ks = _objects.Ksize(p);
        KmallocSizeClassChecked++;
        if (ks != ev.BytesAlloc) KmallocSizeClassMismatches++;
        int cs = KmallocCacheStat(ev.BytesAlloc);
        AddLive(ev.Ptr, new LiveObject { Ours = p, CacheHandle = -1, CacheStatId = cs, SiteId = ev.CallSiteId, Bytes = (int)Math.Min(ks, int.MaxValue) });
    }

    private void OnCacheAlloc(in TraceEvent ev)
    {
        if (!_doObjects || _objects == null) { _skipped[(int)EventKind.KmemCacheAlloc]++; return; }
        int nameId = ev.CacheNameId;
        int h = (uint)nameId < (uint)_cacheHandleByName.Length ? _cacheHandleByName[nameId] - 2 : -2;
        if (h == -2) h = CreateCache(in ev);
        if (h < 0) { _failures[(int)EventKind.KmemCacheAlloc]++; return; }
        DropLost(ev.Ptr);
        nint p = _objects.CacheAlloc(h, ev.Gfp);
        if (p == 0) { _failures[(int)EventKind.KmemCacheAlloc]++; return; }
        _replayed[(int)EventKind.KmemCacheAlloc]++;
        CacheStat c = _caches[_cacheStatOfHandle[h]];
        if (c.ObjectSize != ev.BytesAlloc) CacheSizeMismatches++;
        AddLive(ev.Ptr, new LiveObject { Ours = p, CacheHandle = h, CacheStatId = _cacheStatOfHandle[h], SiteId = ev.CallSiteId, Bytes = (int)c.ObjectSize });
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int CreateCache(in TraceEvent ev)
    {
        string name = _strings[ev.CacheNameId];
        int size = (int)Math.Clamp(ev.BytesAlloc, 1, int.MaxValue);
        int h = _objects!.CreateCache(name, size);
        int nameId = ev.CacheNameId;
        if (nameId >= _cacheHandleByName.Length) Array.Resize(ref _cacheHandleByName, Math.Max(nameId + 1, _cacheHandleByName.Length * 2));
        _cacheHandleByName[nameId] = Math.Max(h, -1) + 2;
        if (h >= 0)
        {
            if (h >= _cacheStatOfHandle.Length) Array.Resize(ref _cacheStatOfHandle, Math.Max(h + 1, _cacheStatOfHandle.Length * 2));
            _cacheStatOfHandle[h] = _caches.Count;
            _caches.Add(new CacheStat(name, kmalloc: false) { ObjectSize = _objects.CacheSlotSize(h) });
        }
        return h;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int KmallocCacheStat(long bytesAlloc)
    {
        if ((ulong)bytesAlloc <= (ulong)KmallocMaxCacheSize)
        {
            int id = _kmallocSmallStat[(int)bytesAlloc >> 3] - 1;
            if (id >= 0 && _caches[id].ObjectSize == bytesAlloc) return id;
        }
        else if (_kmallocLargeStat.TryGetValue(bytesAlloc, out int large)) return large;
        return NewKmallocCacheStat(bytesAlloc);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private int NewKmallocCacheStat(long bytesAlloc)
    {
        int id = _caches.Count;
        string name = bytesAlloc > KmallocMaxCacheSize ? $"kmalloc-large-{bytesAlloc / 1024}k" :
            bytesAlloc >= 1024 && bytesAlloc % 1024 == 0 ? $"kmalloc-{bytesAlloc / 1024}k" : $"kmalloc-{bytesAlloc}";
        _caches.Add(new CacheStat(name, kmalloc: true) { ObjectSize = bytesAlloc });
        // Sizes that are not multiples of 8 (none in Linux's kmalloc classes) share a slot: the ObjectSize check
        // above sends the loser here each time, which only costs speed.
        if ((ulong)bytesAlloc <= (ulong)KmallocMaxCacheSize) _kmallocSmallStat[(int)bytesAlloc >> 3] = id + 1;
        else _kmallocLargeStat[bytesAlloc] = id;
        return id;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void AddLive(ulong ptr, LiveObject o)
    {
        _live.Set(ptr, o);
        LiveObjectBytes += o.Bytes;
        CacheStat c = _caches[o.CacheStatId];
        c.Allocs++;
        c.Live++;
        c.LiveBytes += o.Bytes;
        if (c.Live > c.PeakLive) c.PeakLive = c.Live;
        if (c.LiveBytes > c.PeakLiveBytes) c.PeakLiveBytes = c.LiveBytes;
        ref SiteStat s = ref Site(o.SiteId);
        s.Allocs++;
        s.Bytes += o.Bytes;
        s.LiveObjects++;
        s.LiveBytes += o.Bytes;
        NotePeak();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref SiteStat Site(int id)
    {
        if ((uint)id >= (uint)_sites.Length) GrowSites(id);
        return ref _sites[id];
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GrowSites(int id) => Array.Resize(ref _sites, Math.Max(id + 1, _sites.Length * 2));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void NotePeak()
    {
        long total = LiveObjectBytes + LivePageBytes + LiveVmapBytes;
        if (total > PeakLiveBytes)
        {
            PeakLiveBytes = total;
            PeakLiveObjects = _live.Count;
        }
    }

    private void DropLost(ulong ptr)
    {
        if (_live.Remove(ptr, out LiveObject old))
        {
            LostFrees++;
            FreeObject(in old);
        }
    }

    private void OnFree(in TraceEvent ev)
    {
        if (!_doObjects || _objects == null) { _skipped[(int)ev.Kind]++; return; }
        if (ev.Ptr == 0) { NullFrees++; _replayed[(int)ev.Kind]++; return; }
        if (!_live.Remove(ev.Ptr, out LiveObject o)) { UnknownFrees++; _skipped[(int)ev.Kind]++; return; }
        _replayed[(int)ev.Kind]++;
        FreeObject(in o);
    }

    private void FreeObject(in LiveObject o)
    {
        LiveObjectBytes -= o.Bytes;
        CacheStat c = _caches[o.CacheStatId];
        c.Frees++;
        c.Live--;
        c.LiveBytes -= o.Bytes;
        ref SiteStat s = ref Site(o.SiteId);
        s.LiveObjects--;
        s.LiveBytes -= o.Bytes;
        if (o.CacheHandle < 0) _objects!.Kfree(o.Ours);
        else _objects!.CacheFree(o.CacheHandle, o.Ours);
    }

    // ---------------------------------------------------------------- pages

    private void OnPageAlloc(in TraceEvent ev)
    {
        int cpu = ev.Cpu;
        if ((uint)cpu >= (uint)_lastPagePfn.Length) GrowCpus(cpu);
        if (_filterSlabPages && IsSlabPageGfp(ev.Gfp))
        {
            SlabPageAllocs++;
            _skipped[(int)EventKind.MmPageAlloc]++;
            _skippedPfns.Set(ev.Pfn, 1);
            return;
        }
        _livePages.Remove(ev.Pfn, out LivePage lost);
        if (lost.Page != 0)
        {
            LostFrees++;
            LivePageBytes -= ArchProfile.PageSize << lost.Order;
            _pages.FreePages((PageFrame*)lost.Page, lost.Order);
        }
        PageFrame* page = _pages.AllocPages(ev.Gfp, ev.Order);
        if (page == null) { _failures[(int)EventKind.MmPageAlloc]++; return; }
        _replayed[(int)EventKind.MmPageAlloc]++;
        _livePages.Set(ev.Pfn, new LivePage { Page = (nint)page, Order = ev.Order });
        LivePageBytes += ArchProfile.PageSize << ev.Order;
        _lastPagePfn[cpu] = ev.Pfn;
        _lastPageSeq[cpu] = _seq;
        _lastPageOrder[cpu] = ev.Order;
        NotePeak();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GrowCpus(int cpu)
    {
        int n = Math.Max(cpu + 1, _lastPagePfn.Length * 2);
        Array.Resize(ref _lastPagePfn, n);
        Array.Resize(ref _lastPageSeq, n);
        Array.Resize(ref _lastPageOrder, n);
    }

    // kmalloc_large logs mm_page_alloc (alloc_pages_node with __GFP_COMP) and then kmalloc on the same CPU. If the last
    // page event of this CPU is an allocation of the matching order that nothing came between on the whole trace
    // (sequence number just before this event, or the CPU's previous event), give it back: the kmalloc replays it.
    private void UndoKmallocLargePage(in TraceEvent ev)
    {
        if (!_filterSlabPages) return;
        int cpu = ev.Cpu;
        if ((uint)cpu >= (uint)_lastPagePfn.Length) return;
        long seq = _lastPageSeq[cpu];
        if (seq == 0 || _seq - seq > 16 || _lastPageOrder[cpu] != PageAllocator.GetOrder(ev.BytesAlloc)) return;
        ulong pfn = _lastPagePfn[cpu];
        _lastPageSeq[cpu] = 0;
        if (!_livePages.Remove(pfn, out LivePage lp)) return;
        _replayed[(int)EventKind.MmPageAlloc]--;
        _skipped[(int)EventKind.MmPageAlloc]++;
        KmallocLargePageAllocs++;
        LivePageBytes -= ArchProfile.PageSize << lp.Order;
        _skippedPfns.Set(pfn, 1);
        _pages.FreePages((PageFrame*)lp.Page, lp.Order);
    }

    private void OnPageFree(in TraceEvent ev)
    {
        if (!_livePages.Remove(ev.Pfn, out LivePage lp))
        {
            _skipped[(int)EventKind.MmPageFree]++;
            if (!_skippedPfns.Remove(ev.Pfn, out _)) UnknownPageFrees++;
            return;
        }
        _replayed[(int)EventKind.MmPageFree]++;
        LivePageBytes -= ArchProfile.PageSize << lp.Order;
        _pages.FreePages((PageFrame*)lp.Page, ev.Order);
    }

    // ---------------------------------------------------------------- vmalloc

    private void OnVmapAlloc(in TraceEvent ev)
    {
        if (!_doObjects || _objects == null || !_objects.HasVmalloc || ev.Failed) { _skipped[(int)EventKind.AllocVmapArea]++; return; }
        // __get_vm_area_node adds one guard page to the size it asks alloc_vmap_area for (unless VM_NO_GUARD).
        long size = (long)Math.Max(ev.Size, (ulong)(2 * ArchProfile.PageSize)) - ArchProfile.PageSize;
        if (_liveVmaps.Remove(ev.VaStart, out LiveVmap lost))
        {
            LostFrees++;
            LiveVmapBytes -= lost.Bytes;
            _objects.Vfree(lost.Ours);
        }
        nint p = ev.Align > (ulong)ArchProfile.PageSize ? _objects.VmallocAligned(size, ev.Align, Gfp.Kernel) : _objects.Vmalloc(size, Gfp.Kernel);
        if (p == 0) { _failures[(int)EventKind.AllocVmapArea]++; return; }
        _replayed[(int)EventKind.AllocVmapArea]++;
        _liveVmaps.Set(ev.VaStart, new LiveVmap { Ours = p, Bytes = size, SiteId = ev.CallSiteId });
        LiveVmapBytes += size;
        NotePeak();
    }

    private void OnVmapFree(in TraceEvent ev)
    {
        if (!_doObjects || _objects == null || !_objects.HasVmalloc) { _skipped[(int)EventKind.FreeVmapAreaNoflush]++; return; }
        if (!_liveVmaps.TryGetValue(ev.VaStart, out LiveVmap v)) { UnknownVmapFrees++; _skipped[(int)EventKind.FreeVmapAreaNoflush]++; return; }
        // vfree first: if kmem refuses it (might_sleep in atomic context), the area stays in the table for the retry.
        _objects.Vfree(v.Ours);
        _liveVmaps.Remove(ev.VaStart, out _);
        _replayed[(int)EventKind.FreeVmapAreaNoflush]++;
        LiveVmapBytes -= v.Bytes;
    }

    // ---------------------------------------------------------------- end

    /// <summary>Frees everything still live (objects, pages, vmalloc areas). Returns how many allocations it freed.</summary>
    public long FreeAllLive()
    {
        long n = 0;
        for (int i = 0; i <= _live.Capacity; i++)
        {
            if (!_live.TryGetAt(i, out _, out LiveObject o)) continue;
            try { FreeObject(in o); }
            catch (KmemException e) { AllocatorErrors++; if (_errorSamples.Count < 8) _errorSamples.Add("at end: " + e.Message.Split('\n')[0]); }
            n++;
        }
        _live.Clear();
        for (int i = 0; i <= _livePages.Capacity; i++)
        {
            if (!_livePages.TryGetAt(i, out _, out LivePage p)) continue;
            try { _pages.FreePages((PageFrame*)p.Page, p.Order); }
            catch (KmemException e) { AllocatorErrors++; if (_errorSamples.Count < 8) _errorSamples.Add("at end: " + e.Message.Split('\n')[0]); }
            LivePageBytes -= ArchProfile.PageSize << p.Order;
            n++;
        }
        _livePages.Clear();
        for (int i = 0; i <= _liveVmaps.Capacity; i++)
        {
            if (!_liveVmaps.TryGetAt(i, out _, out LiveVmap v)) continue;
            try { _objects!.Vfree(v.Ours); }
            catch (KmemException e) { AllocatorErrors++; if (_errorSamples.Count < 8) _errorSamples.Add("at end: " + e.Message.Split('\n')[0]); }
            LiveVmapBytes -= v.Bytes;
            n++;
        }
        _liveVmaps.Clear();
        _skippedPfns.Clear();
        return n;
    }
}
