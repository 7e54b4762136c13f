using Stopwatch = System.Diagnostics.Stopwatch;
using System.Text;
using Kmem.Diagnostics;
using Kmem.Mm;
using Kmem.PageAlloc;
using Kmem.Physical;

namespace Kmem.Reclaim;

/// <summary>
/// Reclaim: the blocking half of __alloc_pages_slowpath (plugged in through <see cref="IAllocSlowPath"/>), kswapd,
/// the LRU lists, swap, shrinkers, direct compaction and the OOM killer, for one machine (one node).
/// </summary>
/// <remarks>
/// <para><b>1. Concepts.</b> Kernel memory (alloc_pages, kmalloc, vmalloc by kernel code) is pinned: nothing here ever
/// takes it back, except what a subsystem volunteers through a <see cref="Shrinker"/>. Reclaimable memory is owned by
/// an <see cref="IPageOwner"/>: anonymous pages of a <see cref="Process"/> (reclaimed by swapping them out, which needs
/// __GFP_IO and a free swap slot) and page-cache pages of a <see cref="CachedFile"/> (clean ones are dropped; dirty ones
/// must be written back first, which needs __GFP_IO and __GFP_FS). Both sit on the node's <see cref="Lru"/> lists.</para>
/// <para><b>2. The slow path</b> (<see cref="Allocate"/>), in __alloc_pages_slowpath's order, after the page allocator's
/// own kswapd wakeup and reserve retry: (a) for costly orders (&gt; PAGE_ALLOC_COSTLY_ORDER = 3) and unmovable order&gt;0
/// requests, direct compaction first; (b) loop: wake kswapd, retry at the min watermark, direct reclaim
/// (try_to_free_pages: priorities DEF_PRIORITY 12 down to 0 until SWAP_CLUSTER_MAX = 32 pages are reclaimed; counts
/// allocstall_*, pgscan_direct, pgsteal_direct), retry, compaction for order &gt; 0; __GFP_NORETRY stops here; costly orders
/// without __GFP_RETRY_MAYFAIL stop here; should_reclaim_retry (MAX_RECLAIM_RETRIES = 16 rounds without progress,
/// scaled-down reclaimable+free estimate against the min watermark) loops; then __alloc_pages_may_oom (last try at the
/// high watermark; never for costly orders, __GFP_RETRY_MAYFAIL, __GFP_THISNODE or lowmem-only requests; without
/// __GFP_FS it "makes progress" without killing, as out_of_memory does); (c) __GFP_NOFAIL: retry with ALLOC_MIN_RESERVE
/// and loop forever.</para>
/// <para><b>3. Blocking.</b> An allocation that makes no progress really sleeps: it waits on <c>_freedLock</c> for at
/// most <see cref="ThrottleMs"/> (reclaim_throttle's one-jiffy NOPROGRESS timeout at HZ=250: 4 ms), and is woken early
/// when kmem learns of freed memory (reclaim progress, kswapd, munmap/exit/truncate, an OOM kill, <see cref="NotifyFreed"/>).
/// A kernel <c>__free_pages</c> elsewhere is noticed at the next timed retry. GFP_ATOMIC/GFP_NOWAIT never get here
/// (the allocator calls <see cref="Allocate"/> only with __GFP_DIRECT_RECLAIM or __GFP_NOFAIL).</para>
/// <para><b>4. kswapd</b> (<see cref="Kswapd"/>): one thread per node, woken by <see cref="WakeKswapd"/> when an
/// allocation failed the low watermark and no zone up to the request's highest is balanced (free above high for the
/// order, pgdat_balanced); it runs balance_pgdat with GFP_KERNEL until balanced or priority 0, then sleeps.</para>
/// <para><b>5. Locking</b>, outermost first: <c>_oomLock</c> (oom_lock, global) → an owner's lock (mmap_lock / i_pages
/// lock, per owner; taken with TryEnter by reclaim and compaction) → <see cref="Lru.LruLock"/> (per node) → pcp lock →
/// zone lock. <c>_shrinkerLock</c>, <c>_ownerLock</c> (owner table), <c>_freedLock</c> (the wait queue) and
/// <c>_kswapdLock</c> are leaves. No lock is held across an allocation, except that the OOM path holds oom_lock around
/// its own last attempt, as Linux does.</para>
/// <para><b>6. Tuning</b> (Linux's numbers): DEF_PRIORITY 12, SWAP_CLUSTER_MAX 32, MAX_RECLAIM_RETRIES 16,
/// MAX_COMPACT_RETRIES 16, vm.swappiness 60 (anon:file scan weights 60:140), inactive_ratio 1 below 1 GiB of list
/// pages, DEFAULT_SEEKS 2, SHRINK_BATCH 128.</para>
/// <para><b>7. Deviations</b>: dirty file pages are written back synchronously by the reclaimer when its gfp allows I/O and
/// FS (Linux leaves that to the flusher threads and kswapd); one lruvec per node, no memcg, no MGLRU, no workingset
/// refault detection; when the OOM killer finds no killable process Linux panics ("System is deadlocked on memory"),
/// kmem logs that and keeps the caller waiting; every allocation that is not __GFP_NOFAIL gives up after
/// <see cref="StallTimeout"/> (a guard so that a program never hangs; Linux would retry GFP_KERNEL order-0 forever).
/// User and page-cache pages are GFP_HIGHUSER_MOVABLE, so on x86_32 they live in HIGHMEM; every copy of their bytes
/// (fault-in from swap, swap-out, writeback, migration, copy to/from user) goes through kmap_local
/// (<see cref="HighMem.LocalPageMap"/>), as Linux's copy_highpage and friends do.</para>
/// </remarks>
public sealed unsafe partial class Reclaimer : IAllocSlowPath, IDisposable
{
    /// <summary>DEF_PRIORITY.</summary>
    public const int DefPriority = 12;
    /// <summary>MAX_RECLAIM_RETRIES.</summary>
    public const int MaxReclaimRetries = 16;
    /// <summary>MAX_COMPACT_RETRIES.</summary>
    public const int MaxCompactRetries = 16;
    /// <summary>PAGE_ALLOC_COSTLY_ORDER.</summary>
    public const int CostlyOrder = 3;
    /// <summary>SWAP_CLUSTER_MAX.</summary>
    public const long SwapClusterMax = 32;
    /// <summary>vm.swappiness default.</summary>
    public const int Swappiness = 60;

    private readonly Machine _m;
    private readonly PageAllocator _pa;
    private readonly MemMap _map;
    private readonly VmStat _stat;
    private readonly KernelLog _log;

    private readonly Lock _ownerLock = new();
    private IPageOwner?[] _owners = new IPageOwner?[64];
    private readonly Stack<int> _freeOwnerIds = new();
    private int _nextOwnerId = 1;

    private readonly Lock _shrinkerLock = new();
    private Shrinker[] _shrinkers = [];

    private readonly object _freedLock = new();
    private int _waiters;
    private long _freedEvents;

    private readonly object _oomLock = new();
    private readonly Lock _procLock = new();
    private readonly List<Process> _processes = new();
    private int _nextPid = 1000;

    private readonly Lock _statsLock = new();
    private readonly Dictionary<Gfp, StallStats> _stalls = new();

    public Lru Lru { get; }
    public SwapDevice? Swap { get; private set; }
    public Kswapd Kswapd { get; }
    /// <summary>Page cache of this machine's files.</summary>
    public PageCache PageCache { get; }

    /// <summary>Longest time a non-__GFP_NOFAIL allocation keeps retrying before it fails (see remarks, 7).</summary>
    public TimeSpan StallTimeout { get; set; } = TimeSpan.FromSeconds(30);
    /// <summary>One no-progress sleep, in ms (reclaim_throttle's timeout).</summary>
    public int ThrottleMs { get; set; } = 4;
    /// <summary>OOM kills so far.</summary>
    public long OomKills => _stat[VmItem.OomKill];

    public Reclaimer(Machine m)
    {
        _m = m;
        _pa = m.Pages;
        _map = m.MemMap;
        _stat = m.Stat;
        _log = m.Log;
        Lru = new Lru(_map, _stat);
        PageCache = new PageCache(m, this);
        Kswapd = new Kswapd(this, m);
        _pa.SlowPath = this;
    }

    internal Machine Machine => _m;

    // =====================================================================================================
    // Owners, processes, shrinkers, swap
    // =====================================================================================================

    internal int RegisterOwner(IPageOwner? owner)
    {
        lock (_ownerLock)
        {
            int id = _freeOwnerIds.Count > 0 ? _freeOwnerIds.Pop() : _nextOwnerId++;
            if (id >= _owners.Length) Array.Resize(ref _owners, _owners.Length * 2);
            Volatile.Write(ref _owners[id], owner);
            return id;
        }
    }

    internal void SetOwner(int id, IPageOwner owner) => Volatile.Write(ref _owners[id], owner);

    internal void UnregisterOwner(int id)
    {
        lock (_ownerLock)
        {
            Volatile.Write(ref _owners[id], null);
            _freeOwnerIds.Push(id);
        }
    }

    /// <summary>The owner a page's mapping names, or null.</summary>
    public IPageOwner? Owner(nint mapping)
    {
        var owners = Volatile.Read(ref _owners);
        return (ulong)mapping < (ulong)owners.Length ? Volatile.Read(ref owners[mapping]) : null;
    }

    /// <summary>register_shrinker.</summary>
    public Shrinker RegisterShrinker(Shrinker s)
    {
        lock (_shrinkerLock) _shrinkers = [.. _shrinkers, s];
        return s;
    }

    /// <summary>unregister_shrinker.</summary>
    public void UnregisterShrinker(Shrinker s)
    {
        lock (_shrinkerLock) _shrinkers = _shrinkers.Where(x => x != s).ToArray();
    }

    /// <summary>swapon: attach a swap area of <paramref name="pages"/> slots (one per machine).</summary>
    public SwapDevice SwapOn(long pages)
    {
        if (Swap != null) throw new InvalidOperationException("kmem: a swap area is already active");
        Swap = new SwapDevice(pages);
        _m.SwapTotalPages = Swap.TotalPages - 1;
        _m.SwapFreePages = Swap.FreePages;
        _log.Write(LogLevel.Info, $"Adding {(Swap.TotalPages - 1) * 4}k swap on /dev/kmem-swap.  Priority:-2 extents:1 across:{(Swap.TotalPages - 1) * 4}k");
        return Swap;
    }

    internal long SwapAlloc()
    {
        long slot = Swap?.Alloc() ?? -1;
        if (slot > 0) lock (_commitLock) _m.SwapFreePages = Swap!.FreePages;
        return slot;
    }

    internal void SwapFree(long slot)
    {
        Swap!.Free(slot);
        lock (_commitLock) _m.SwapFreePages = Swap.FreePages;
    }

    /// <summary>fork+exec: a new process with an empty address space.</summary>
    public Process CreateProcess(string comm, int oomScoreAdj = 0, int uid = 0)
    {
        int pid;
        lock (_procLock) pid = _nextPid++;
        var p = new Process(this, _m, pid, comm, uid, oomScoreAdj);
        lock (_procLock) _processes.Add(p);
        return p;
    }

    internal void RemoveProcess(Process p)
    {
        lock (_procLock) _processes.Remove(p);
    }

    /// <summary>Live processes, by pid.</summary>
    public IReadOnlyList<Process> Processes
    {
        get { lock (_procLock) return _processes.OrderBy(p => p.Pid).ToList(); }
    }

    // =====================================================================================================
    // Waiting for memory
    // =====================================================================================================

    /// <summary>Tell sleeping allocations that memory was freed (called by every kmem path that frees user memory; kernel code may call it too).</summary>
    public void NotifyFreed()
    {
        Interlocked.Increment(ref _freedEvents);
        if (Volatile.Read(ref _waiters) == 0) return;
        lock (_freedLock) Monitor.PulseAll(_freedLock);
    }

    /// <summary>Sleep until memory is freed or <paramref name="ms"/> pass (reclaim_throttle).</summary>
    internal void Throttle(int ms)
    {
        long seen = Interlocked.Read(ref _freedEvents);
        Interlocked.Increment(ref _waiters);
        try
        {
            lock (_freedLock)
            {
                if (Interlocked.Read(ref _freedEvents) == seen) Monitor.Wait(_freedLock, ms);
            }
        }
        finally { Interlocked.Decrement(ref _waiters); }
    }

    // =====================================================================================================
    // The slow path
    // =====================================================================================================

    public void WakeKswapd(Gfp gfp, int order, ZoneType highestZone) => Kswapd.Wake(gfp, order, highestZone);

    public PageFrame* Allocate(Gfp gfp, int order, ZoneType highestZone, AllocFlags allocFlags, PageAllocator.RetryAllocation retry)
    {
        long start = Stopwatch.GetTimestamp();
        PageFrame* page = AllocateSlow(gfp, order, highestZone, allocFlags, retry, start);
        RecordStall(gfp, page != null, Stopwatch.GetElapsedTime(start));
        return page;
    }

    private PageFrame* AllocateSlow(Gfp gfp, int order, ZoneType highest, AllocFlags flags, PageAllocator.RetryAllocation retry, long start)
    {
        bool canReclaim = (gfp & Gfp.DirectReclaim) != 0;
        bool nofail = (gfp & Gfp.NoFail) != 0;
        bool costly = order > CostlyOrder;
        MigrateType mt = GfpZones.MigrateTypeOf(gfp);
        if (!canReclaim)
        {
            // __GFP_NOFAIL without __GFP_DIRECT_RECLAIM: WARN_ON_ONCE_GFP(!can_direct_reclaim) and fail.
            _log.Write(LogLevel.Warning, $"WARNING: CPU: {Cpu.Current(_m.CpuCount)} PID: {CurrentTask.Pid} at mm/page_alloc.c __alloc_pages_slowpath: __GFP_NOFAIL without __GFP_DIRECT_RECLAIM ({CurrentTask.Comm})");
            return null;
        }

        PageFrame* page;
        if (order > 0 && (costly || mt != MigrateType.Movable))
        {
            page = Compact(gfp, order, highest, flags, retry);
            if (page != null) return page;
            if (costly && (gfp & Gfp.NoRetry) != 0) return null;
        }

        int noProgressLoops = 0;
        int compactRetries = 0;
        bool warnedNoVictim = false;
        long deadline = start + (long)(StallTimeout.TotalSeconds * Stopwatch.Frequency);
        while (true)
        {
            if ((flags & AllocFlags.Kswapd) != 0) WakeKswapd(gfp, order, highest);
            page = retry(flags);
            if (page != null) return page;

            long reclaimed = TryToFreePages(gfp, order, highest);
            page = retry(flags);
            if (page != null) return page;
            if (reclaimed > 0)
            {
                // __alloc_pages_direct_reclaim: the reclaimed pages may sit on per-CPU lists: drain them and retry once.
                _pa.DrainAllPages();
                page = retry(flags);
                if (page != null) return page;
            }

            if (order > 0)
            {
                page = Compact(gfp, order, highest, flags, retry);
                if (page != null) return page;
            }

            bool giveUp = (gfp & Gfp.NoRetry) != 0 || (costly && (gfp & Gfp.RetryMayFail) == 0);
            if (!giveUp && !nofail && Stopwatch.GetTimestamp() > deadline) giveUp = true;
            if (!giveUp)
            {
                if (ShouldReclaimRetry(gfp, order, highest, flags, reclaimed > 0, ref noProgressLoops))
                {
                    if (reclaimed == 0) Throttle(ThrottleMs);
                    continue;
                }
                if (reclaimed > 0 && order > 0 && compactRetries++ < MaxCompactRetries) continue;

                page = MayOom(gfp, order, highest, retry, out bool oomProgress, ref warnedNoVictim);
                if (page != null) return page;
                if (oomProgress)
                {
                    noProgressLoops = 0;
                    continue;
                }
            }

            // nopage:
            if (!nofail) return null;
            page = retry(flags | AllocFlags.MinReserve);
            if (page != null) return page;
            Throttle(ThrottleMs);
        }
    }

    /// <summary>should_reclaim_retry.</summary>
    private bool ShouldReclaimRetry(Gfp gfp, int order, ZoneType highest, AllocFlags flags, bool progress, ref int noProgressLoops)
    {
        if (progress && order <= CostlyOrder) noProgressLoops = 0;
        else noProgressLoops++;
        if (noProgressLoops > MaxReclaimRetries) return false;
        bool swapOk = (gfp & Gfp.Io) != 0 && Swap != null && Swap.FreePages > 0;
        for (int zi = (int)highest; zi >= 0; zi--)
        {
            Zone? z = _pa.GetZone((ZoneType)zi);
            if (z == null) continue;
            long reclaimable = Lru.ZoneFile(z.Type) + (swapOk ? Lru.ZoneAnon(z.Type) : 0);
            long available = reclaimable + z.FreePages;
            available -= (noProgressLoops * available + MaxReclaimRetries - 1) / MaxReclaimRetries;
            if (PageAllocator.ZoneWatermarkOk(z, order, z.WmarkMin, highest, flags, available)) return true;
        }
        return false;
    }

    /// <summary>__alloc_pages_may_oom.</summary>
    private PageFrame* MayOom(Gfp gfp, int order, ZoneType highest, PageAllocator.RetryAllocation retry, out bool progress, ref bool warnedNoVictim)
    {
        progress = false;
        if (!Monitor.TryEnter(_oomLock))
        {
            // Somebody else is killing: schedule_timeout_uninterruptible(1) and report progress.
            progress = true;
            Throttle(ThrottleMs);
            return null;
        }
        try
        {
            // Last attempt at the high watermark: a parallel kill may have freed enough.
            PageFrame* page = retry(AllocFlags.WmarkHigh | AllocFlags.Cpuset);
            if (page != null) return page;
            bool nofail = (gfp & Gfp.NoFail) != 0;
            if (order > CostlyOrder) return null;
            if ((gfp & (Gfp.RetryMayFail | Gfp.ThisNode)) != 0) return null;
            if ((gfp & (Gfp.Dma | Gfp.Dma32)) != 0) return null; // ac->highest_zoneidx < ZONE_NORMAL
            if ((gfp & Gfp.Fs) == 0 && !nofail)
            {
                // out_of_memory: "The OOM killer does not compensate for IO-less reclaim": progress without a kill.
                progress = true;
                Throttle(ThrottleMs);
                return null;
            }
            if (OutOfMemory(gfp, order))
            {
                progress = true;
            }
            else
            {
                if (!warnedNoVictim)
                {
                    warnedNoVictim = true;
                    _log.Write(LogLevel.Err, "Out of memory and no killable processes...\nkmem: (Linux would panic: \"System is deadlocked on memory\"); the allocation keeps waiting for memory to be freed");
                }
                progress = true;
                Throttle(ThrottleMs);
            }
            if (nofail)
            {
                page = retry(AllocFlags.NoWatermarks);
                if (page != null) return page;
            }
            return null;
        }
        finally { Monitor.Exit(_oomLock); }
    }

    // =====================================================================================================
    // Stall statistics (per gfp value, for summaries)
    // =====================================================================================================

    /// <summary>Time spent and outcomes in the blocking slow path for one gfp value.</summary>
    public sealed class StallStats
    {
        public long Stalls;
        public long Failures;
        public double BlockedMs;
    }

    private void RecordStall(Gfp gfp, bool ok, TimeSpan t)
    {
        lock (_statsLock)
        {
            if (!_stalls.TryGetValue(gfp, out var s)) _stalls[gfp] = s = new StallStats();
            s.Stalls++;
            if (!ok) s.Failures++;
            s.BlockedMs += t.TotalMilliseconds;
        }
    }

    /// <summary>Snapshot of slow-path stalls by gfp value.</summary>
    public IReadOnlyDictionary<Gfp, StallStats> Stalls
    {
        get
        {
            lock (_statsLock)
                return _stalls.ToDictionary(k => k.Key, k => new StallStats { Stalls = k.Value.Stalls, Failures = k.Value.Failures, BlockedMs = k.Value.BlockedMs });
        }
    }

    // =====================================================================================================
    // Views
    // =====================================================================================================

    /// <summary>/proc/swaps.</summary>
    public string SwapsView()
    {
        var sb = new StringBuilder("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
        if (Swap != null)
        {
            long size = (Swap.TotalPages - 1) * 4, used = (Swap.TotalPages - 1 - Swap.FreePages) * 4;
            sb.Append($"{"/dev/kmem-swap",-40}partition\t{size}\t\t{used}\t\t-2\n");
        }
        return sb.ToString();
    }

    public void Dispose()
    {
        Kswapd.Dispose();
        foreach (var p in Processes) p.Exit();
        PageCache.DropAll();
        if (_pa.SlowPath == this) _pa.SlowPath = null;
        Swap?.Dispose();
    }
}

public sealed partial class Reclaimer
{
    private readonly Lock _commitLock = new();

    /// <summary>vm_acct_memory / vm_unacct_memory: Committed_AS.</summary>
    internal void AddCommitted(long pages)
    {
        lock (_commitLock) _m.CommittedPages += pages;
    }
}
