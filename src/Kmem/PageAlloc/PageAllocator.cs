using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Kmem.Diagnostics;
using Kmem.Physical;

namespace Kmem.PageAlloc;

/// <summary>
/// The buddy page allocator: alloc_pages / __free_pages and friends, over the zones of one node.
/// </summary>
/// <remarks>
/// 1. Concepts. Memory is handed out in blocks of 2^order pages (order 0..MAX_PAGE_ORDER = 10). A free block of
///    order n whose buddy (pfn ^ 2^n) is also free of order n merges into one block of order n+1; allocation splits
///    the smallest sufficient block. Each request names, through its GFP flags, the highest zone it may use
///    (gfp_zone) and its mobility (gfp_migratetype).
/// 2. Fast path (get_page_from_freelist): walk the zonelist from the highest allowed zone down; a zone qualifies if
///    its free pages stay above the low watermark plus the lowmem protection for that request; orders up to
///    PAGE_ALLOC_COSTLY_ORDER come from the calling CPU's pcp list, larger ones from the buddy lists under the zone lock.
/// 3. Reserve retry (the start of __alloc_pages_slowpath): wake kswapd, then try again at the min watermark with the
///    reserves gfp_to_alloc_flags grants (__GFP_HIGH: min/2; GFP_ATOMIC: 3/8 of min; __GFP_MEMALLOC: no watermark).
///    Then the <see cref="IAllocSlowPath"/> seam (reclaim, compaction, OOM), then failure.
/// 4. Fallback: when the requested migratetype's lists are empty, claim a whole pageblock of another type (largest
///    block first) if Linux's should_try_claim_block allows it, else steal the smallest block (__rmqueue_claim /
///    __rmqueue_steal, fallbacks[] = Unmovable→{Reclaimable, Movable}, Movable→{Reclaimable, Unmovable},
///    Reclaimable→{Unmovable, Movable}).
/// 5. Locking: per-CPU pcp try-lock, then zone->lock (<see cref="Zone.Lock"/>). No other lock is taken inside.
/// 6. Bad frees are detected before any list is touched: the report is logged and thrown, and the lists stay intact.
/// 7. Deviations from Linux, with reasons: pcp->high stays at high_min (no dynamic tuning; it only moves batching);
///    no MIGRATE_HIGHATOMIC pageblock reservation (the lists exist and are honoured); pages on pcp lists carry a
///    kmem-only OnPcp flag and allocation heads an AllocHead flag with their order, so that double frees and
///    wrong-order frees are caught, which Linux only does partially (under CONFIG_DEBUG_VM).
/// </remarks>
public sealed unsafe class PageAllocator
{
    private readonly MemMap _map;
    private readonly PhysicalMemory _phys;
    private readonly KernelLog _log;
    private readonly RateLimit _warnRatelimit;
    private readonly VmStat _stat;
    private readonly int _cpus;
    private readonly ZoneSet _zoneSet;
    // Indexed by ZoneType; null where the profile has no such zone or it is empty.
    private readonly Zone?[] _zonesByType = new Zone?[6];
    // gfp_zone + gfp_migratetype precomputed for every value of the five low GFP bits (the four zone modifiers and
    // __GFP_RECLAIMABLE; __GFP_MOVABLE is one of the four): highest zone in bits 0-7, migratetype in bits 8-15, and
    // -1 for a BAD combination. One load replaces two table decodes and the OPT_ZONE_* fix-up on every allocation.
    private const int GfpRouteBits = 0x1f;
    private readonly int[] _gfpRoute = new int[GfpRouteBits + 1];
    // For each highest zone: the first populated zone of the zonelist walk, or null (the pcp fast path's zone).
    private readonly Zone?[] _firstZone = new Zone?[6];

    /// <summary>Populated zones, lowest first.</summary>
    public IReadOnlyList<Zone> Zones { get; }
    public ArchProfile Profile { get; }
    public MemMap MemMap => _map;
    public int CpuCount => _cpus;
    public int MinFreeKbytes { get; private set; }
    public int WatermarkScaleFactor { get; private set; }
    /// <summary>Linux's totalreserve_pages: per zone, the largest lowmem_reserve plus the high watermark.</summary>
    public long TotalReservePages { get; private set; }
    public IAllocSlowPath? SlowPath { get; set; }
    /// <summary>The machine's might_sleep reporter (checked by every allocation that may sleep, as might_alloc).</summary>
    public SleepChecker SleepCheck { get; }

    /// <summary>get_page_from_freelist with other alloc flags, for the slow path to retry.</summary>
    public delegate PageFrame* RetryAllocation(AllocFlags allocFlags);

    internal PageAllocator(MachineConfig cfg, MemoryLayout layout, PhysicalMemory phys, MemMap map, KernelLog log, VmStat stat)
    {
        _map = map;
        _phys = phys;
        _log = log;
        _warnRatelimit = new RateLimit(log, "warn_alloc");
        _stat = stat;
        SleepCheck = new SleepChecker(log);
        _cpus = cfg.Cpus;
        Profile = cfg.Profile;
        foreach (var z in cfg.Profile.Zones)
            _zoneSet |= z switch { ZoneType.Dma => ZoneSet.Dma, ZoneType.Dma32 => ZoneSet.Dma32, ZoneType.HighMem => ZoneSet.HighMem, _ => ZoneSet.Normal };

        var zones = new List<Zone>();
        foreach (var span in layout.Zones)
        {
            var zone = new Zone(map, span, _cpus);
            InitMemmap(zone, span);
            zones.Add(zone);
            _zonesByType[(int)span.Type] = zone;
        }
        Zones = zones;
        WatermarkScaleFactor = cfg.WatermarkScaleFactor;
        MinFreeKbytes = cfg.MinFreeKbytes ?? Watermarks.CalculateMinFreeKbytes(zones);
        Watermarks.SetupLowmemReserve(Profile, zones, cfg.LowmemReserveRatio);
        Watermarks.SetupPerZoneWmarks(zones, MinFreeKbytes, WatermarkScaleFactor);
        TotalReservePages = Watermarks.TotalReservePages(zones);
        foreach (var z in zones) Watermarks.SetupPageset(z, _cpus);
        for (int bits = 0; bits <= GfpRouteBits; bits++)
        {
            try
            {
                ZoneType zt = GfpZones.GfpZone((Gfp)bits, _zoneSet);
                _gfpRoute[bits] = (int)zt | (int)GfpZones.MigrateTypeOf((Gfp)bits) << 8;
            }
            catch (GfpException)
            {
                _gfpRoute[bits] = -1;
            }
        }
        for (int hi = 0; hi < _firstZone.Length; hi++)
            for (int zi = hi; zi >= 0 && _firstZone[hi] == null; zi--) _firstZone[hi] = _zonesByType[zi];
        stat.AddSource(PcpStat);
    }

    /// <summary>The pgalloc_*/pgfree events the pcp fast paths counted under their locks (see <see cref="VmStat.AddSource"/>).</summary>
    private long PcpStat(VmItem item)
    {
        long n = 0;
        foreach (var z in Zones)
        {
            bool alloc = item == VmStat.PgAllocFor(z.Type);
            if (!alloc && item != VmItem.PgFree) continue;
            foreach (var pcp in z.Pcp) n += alloc ? Volatile.Read(ref pcp.StatAlloc) : Volatile.Read(ref pcp.StatFree);
        }
        return n;
    }

    /// <summary>Initialise descriptors and free every managed page into the buddy lists in max-order aligned chunks (memblock_free_all).</summary>
    private void InitMemmap(Zone zone, ZoneSpan span)
    {
        long reservedEnd = span.StartPfn + span.ReservedPages;
        bool high = span.Type == ZoneType.HighMem;
        for (long pfn = span.StartPfn; pfn < span.EndPfn; pfn++)
        {
            PageFrame* p = _map.PfnToPage(pfn);
            p->Zone = span.Type;
            p->Next = p->Prev = PageFrame.None;
            p->CompoundHead = PageFrame.None;
            p->MapCount = -1;
            p->Flags = (high ? PageFlags.HighMem : 0) | (pfn < reservedEnd ? PageFlags.Reserved : 0);
            p->RefCount = pfn < reservedEnd ? 1 : 0;
        }
        zone.ManagedPages = span.ManagedPages;
        lock (zone.Lock)
        {
            long pfn = reservedEnd;
            while (pfn < span.EndPfn)
            {
                int order = Zone.MaxOrder;
                while (order > 0 && ((pfn & ((1L << order) - 1)) != 0 || pfn + (1L << order) > span.EndPfn)) order--;
                zone.FreeOnePage(pfn, order, MigrateType.Movable);
                pfn += 1L << order;
            }
        }
    }

    public Zone? GetZone(ZoneType t) => _zonesByType[(int)t];

    /// <summary>The zone of a page (page_zone).</summary>
    public Zone ZoneOf(PageFrame* page) => _zonesByType[(int)page->Zone]!;

    // =====================================================================================================
    // Allocation
    // =====================================================================================================

    /// <summary>alloc_pages(gfp, order): a block of 2^order pages, or null.</summary>
    /// <exception cref="BadPageException">order above MAX_PAGE_ORDER.</exception>
    /// <exception cref="GfpException">a BAD zone-modifier combination.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* AllocPages(Gfp gfp, int order)
    {
        int route = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_gfpRoute), (int)gfp & GfpRouteBits);
        if ((uint)order > Zone.MaxOrder || route < 0) ThrowBadRequest(gfp, order);
        // prepare_alloc_pages -> might_alloc: one predictable branch unless the caller may sleep.
        if ((gfp & Gfp.DirectReclaim) != 0) Context.MightSleep(SleepCheck);
        if (order <= PerCpuPages.CostlyOrder)
        {
            PageFrame* page = AllocPcpFast(gfp, order, (ZoneType)(byte)route, (MigrateType)(route >> 8));
            if (page != null)
            {
                if (Tracing.Emit.Tracepoints.MmPageAllocOn) TracePageAlloc(page, order, (MigrateType)(route >> 8), gfp);
                return page;
            }
        }
        return AllocPagesGeneric(gfp, order, (ZoneType)(byte)route, (MigrateType)(route >> 8));
    }

    /// <summary>
    /// The common case of get_page_from_freelist for orders up to PAGE_ALLOC_COSTLY_ORDER: the first zone of the
    /// zonelist is above its low watermark (plus protection), this CPU's pcp lock is free and its list has a block.
    /// Anything else returns null and the generic walk takes over (which repeats these checks and handles the rest).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PageFrame* AllocPcpFast(Gfp gfp, int order, ZoneType highest, MigrateType mt)
    {
        Zone? zone = _firstZone[(int)highest];
        if (zone == null) return null;
        long free = zone.FreePages;
        // zone_watermark_fast: order 0 needs free > low + protection; orders 1..3 also need free - (2^order - 1)
        // above it and a block of that order, which __zone_watermark_ok checks on the generic path.
        if (order == 0)
        {
            if (free <= zone.FastMark(highest)) return null;
        }
        else if (!ZoneWatermarkOk(zone, order, zone.WmarkLow + zone.WatermarkBoost, highest, AllocFlags.WmarkLow, free))
        {
            return null;
        }
        PerCpuPages pcp = zone.Pcp[Cpu.Current(_cpus)];
        if (!pcp.TryLock()) return null;
        int li = PerCpuPages.ListIndex(order, mt);
        int pfn = pcp.Head[li];
        if (pfn == PageFrame.None)
        {
            pfn = RefillPcp(zone, pcp, order, li, mt);
            if (pfn == PageFrame.None)
            {
                pcp.Unlock();
                return null;
            }
        }
        PageFrame* page = _map.PfnToPage(pfn);
        int next = page->Next;
        pcp.Head[li] = next;
        if (next != PageFrame.None) _map.PfnToPage(next)->Prev = PageFrame.None;
        else pcp.Tail[li] = PageFrame.None;
        pcp.Count -= 1 << order;
        pcp.StatAlloc += 1 << order;
        pcp.Unlock();
        if (order == 0) PrepNewPage0(page, gfp, mt);
        else PrepNewPage(page, order, gfp, mt);
        return page;
    }

    /// <summary>The pcp list is empty: rmqueue_bulk a batch (pcp lock held). Returns the new head or None.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private int RefillPcp(Zone zone, PerCpuPages pcp, int order, int li, MigrateType mt)
    {
        int blocks = order == 0 ? pcp.Batch : Math.Max(pcp.Batch >> order, 2);
        RmqueueBulk(zone, pcp, order, blocks, li, AllocFlags.WmarkLow, mt);
        return pcp.Head[li];
    }

    /// <summary>prep_new_page for one order-0 page (the pcp hit path): the same fields as <see cref="PrepNewPage"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PrepNewPage0(PageFrame* page, Gfp gfp, MigrateType mt)
    {
        InitAllocHead(page, 0, mt);
        long pfn = _map.PageToPfn(page);
        if ((gfp & Gfp.Zero) != 0 && !_phys.IsKnownZero(pfn)) ZeroFrames(pfn, 1);
        _phys.MarkWritten(pfn, 1);
    }

    /// <summary>The first page of a new allocation: one reference, its order, no owner, off every list.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void InitAllocHead(PageFrame* page, int order, MigrateType mt)
    {
        page->Flags = (page->Flags & PageFlags.HighMem) | PageFlags.AllocHead;
        page->Order = (byte)order;
        page->RefCount = 1;
        page->ListType = mt;
        page->CompoundHead = PageFrame.None;
        page->Next = page->Prev = PageFrame.None;
        page->Private = 0;
        page->Mapping = 0;
        page->MapCount = -1;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageFrame* AllocPagesGeneric(Gfp gfp, int order, ZoneType highest, MigrateType mt)
    {
        PageFrame* page = GetPageFromFreelist(gfp, order, AllocFlags.WmarkLow, highest, mt);
        if (page == null) page = AllocPagesSlowpath(gfp, order, highest, mt);
        if (Tracing.Emit.Tracepoints.MmPageAllocOn && page != null) TracePageAlloc(page, order, mt, gfp);
        return page;
    }

    /// <summary>An order above MAX_PAGE_ORDER or a BAD GFP combination: log the report and throw.</summary>
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadRequest(Gfp gfp, int order)
    {
        try
        {
            GfpZones.GfpZone(gfp, _zoneSet);
            GfpZones.MigrateTypeOf(gfp);
        }
        catch (GfpException e)
        {
            _log.Write(LogLevel.Alert, e.Report);
            throw;
        }
        ThrowOrderTooLarge(gfp, order);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TracePageAlloc(PageFrame* page, int order, MigrateType mt, Gfp gfp) =>
        Tracing.Emit.Tracepoints.MmPageAlloc((nint)page, _map.PageToPfn(page), order, (int)mt, gfp);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageFrame* AllocPagesSlowpath(Gfp gfp, int order, ZoneType highest, MigrateType mt)
    {
        AllocFlags flags = GfpToAllocFlags(gfp, order);
        if ((flags & AllocFlags.Kswapd) != 0) SlowPath?.WakeKswapd(gfp, order, highest);
        PageFrame* page = GetPageFromFreelist(gfp, order, flags, highest, mt);
        if (page != null) return page;

        AllocFlags reserve = PfmemallocFlags(gfp);
        if (reserve != 0)
        {
            page = GetPageFromFreelist(gfp, order, (flags & ~AllocFlags.WmarkMask) | reserve, highest, mt);
            if (page != null) return page;
        }

        if (SlowPath != null && (gfp & (Gfp.DirectReclaim | Gfp.NoFail)) != 0)
        {
            page = SlowPath.Allocate(gfp, order, highest, flags, f => GetPageFromFreelist(gfp, order, f, highest, mt));
            if (page != null) return page;
        }
        WarnAlloc(gfp, order);
        return null;
    }

    /// <summary>gfp_to_alloc_flags: the watermark and reserves the slow path may use.</summary>
    public static AllocFlags GfpToAllocFlags(Gfp gfp, int order)
    {
        AllocFlags f = AllocFlags.WmarkMin | AllocFlags.Cpuset;
        f |= (AllocFlags)(uint)(gfp & (Gfp.High | Gfp.KswapdReclaim));
        if ((gfp & Gfp.DirectReclaim) == 0)
        {
            if ((gfp & Gfp.NoMemAlloc) == 0)
            {
                f |= AllocFlags.NonBlock;
                if (order > 0) f |= AllocFlags.HighAtomic;
            }
            if ((f & AllocFlags.MinReserve) != 0) f &= ~AllocFlags.Cpuset;
        }
        return f;
    }

    /// <summary>__gfp_pfmemalloc_flags: __GFP_MEMALLOC (unless __GFP_NOMEMALLOC) ignores watermarks.</summary>
    public static AllocFlags PfmemallocFlags(Gfp gfp)
    {
        if ((gfp & Gfp.NoMemAlloc) != 0) return 0;
        if ((gfp & Gfp.MemAlloc) != 0) return AllocFlags.NoWatermarks;
        return 0;
    }

    /// <summary>get_page_from_freelist: the zonelist walk.</summary>
    internal PageFrame* GetPageFromFreelist(Gfp gfp, int order, AllocFlags allocFlags, ZoneType highest, MigrateType mt)
    {
        for (int zi = (int)highest; zi >= 0; zi--)
        {
            Zone? zone = _zonesByType[zi];
            if (zone == null) continue;
            if ((allocFlags & AllocFlags.NoWatermarks) == 0)
            {
                long mark = Watermarks.Mark(zone, allocFlags);
                if (!ZoneWatermarkFast(zone, order, mark, highest, allocFlags)) continue;
            }
            PageFrame* page = Rmqueue(zone, order, allocFlags, mt);
            if (page != null)
            {
                PrepNewPage(page, order, gfp, mt);
                _stat.Add(VmStat.PgAllocFor(zone.Type), 1L << order);
                return page;
            }
        }
        return null;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool ZoneWatermarkFast(Zone z, int order, long mark, ZoneType highest, AllocFlags allocFlags)
    {
        long free = z.FreePages;
        if (order == 0 && free > mark + z.LowmemReserve[(int)highest]) return true;
        return ZoneWatermarkOk(z, order, mark, highest, allocFlags, free);
    }

    /// <summary>
    /// __zone_watermark_ok: would the zone stay above <paramref name="mark"/> (reduced by the reserves
    /// <paramref name="allocFlags"/> grant) plus its protection against <paramref name="highest"/>, with a free block
    /// of at least <paramref name="order"/> on an allowed list?
    /// </summary>
    public static bool ZoneWatermarkOk(Zone z, int order, long mark, ZoneType highest, AllocFlags allocFlags, long freePages)
    {
        long min = mark;
        freePages -= (1L << order) - 1;
        if ((allocFlags & AllocFlags.Reserves) != 0)
        {
            if ((allocFlags & AllocFlags.MinReserve) != 0)
            {
                min -= min / 2;
                if ((allocFlags & AllocFlags.NonBlock) != 0) min -= min / 4;
            }
            if ((allocFlags & AllocFlags.Oom) != 0) min -= min / 2;
        }
        if (freePages <= min + z.LowmemReserve[(int)highest]) return false;
        if (order == 0) return true;
        for (int o = order; o < Zone.NrOrders; o++)
        {
            if (z.NrFree(o) == 0) continue;
            for (int mt = 0; mt < PerCpuPages.PcpTypes; mt++)
                if (z.FreeCount(o, (MigrateType)mt) != 0) return true;
            if ((allocFlags & (AllocFlags.HighAtomic | AllocFlags.Oom)) != 0 && z.FreeCount(o, MigrateType.HighAtomic) != 0) return true;
        }
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PageFrame* Rmqueue(Zone zone, int order, AllocFlags allocFlags, MigrateType mt)
    {
        if (order <= PerCpuPages.CostlyOrder)
        {
            PerCpuPages pcp = zone.Pcp[Cpu.Current(_cpus)];
            if (pcp.TryLock())
            {
                PageFrame* page = RmqueuePcplist(zone, pcp, order, allocFlags, mt);
                pcp.Unlock();
                return page;
            }
        }
        return RmqueueBuddy(zone, order, allocFlags, mt);
    }

    private PageFrame* RmqueuePcplist(Zone zone, PerCpuPages pcp, int order, AllocFlags allocFlags, MigrateType mt)
    {
        int li = PerCpuPages.ListIndex(order, mt);
        int pfn = pcp.Head[li];
        if (pfn == PageFrame.None)
        {
            // nr_pcp_alloc: refill a batch (fewer blocks for higher orders, at least 2).
            int blocks = order == 0 ? pcp.Batch : Math.Max(pcp.Batch >> order, 2);
            RmqueueBulk(zone, pcp, order, blocks, li, allocFlags, mt);
            pfn = pcp.Head[li];
            if (pfn == PageFrame.None) return null;
        }
        PageFrame* page = _map.PfnToPage(pfn);
        pcp.Head[li] = page->Next;
        if (page->Next != PageFrame.None) _map.PfnToPage(page->Next)->Prev = PageFrame.None;
        else pcp.Tail[li] = PageFrame.None;
        page->Next = page->Prev = PageFrame.None;
        page->Flags &= ~PageFlags.OnPcp;
        pcp.Count -= 1 << order;
        return page;
    }

    private void RmqueueBulk(Zone zone, PerCpuPages pcp, int order, int blocks, int li, AllocFlags allocFlags, MigrateType mt)
    {
        lock (zone.Lock)
        {
            for (int i = 0; i < blocks; i++)
            {
                long pfn = Rmqueue(zone, order, mt, allocFlags);
                if (pfn < 0) break;
                PageFrame* p = _map.PfnToPage(pfn);
                p->Flags |= PageFlags.OnPcp;
                p->PcpCpu = (byte)pcp.Cpu;
                p->Order = (byte)order;
                p->ListType = mt;
                // Append at the tail so the batch comes out in address order, as Linux's list_add_tail in rmqueue_bulk.
                p->Next = PageFrame.None;
                p->Prev = pcp.Tail[li];
                if (pcp.Tail[li] != PageFrame.None) _map.PfnToPage(pcp.Tail[li])->Next = (int)pfn;
                else pcp.Head[li] = (int)pfn;
                pcp.Tail[li] = (int)pfn;
                pcp.Count += 1 << order;
            }
        }
    }

    private PageFrame* RmqueueBuddy(Zone zone, int order, AllocFlags allocFlags, MigrateType mt)
    {
        long pfn = -1;
        lock (zone.Lock)
        {
            if (order > 0 && (allocFlags & AllocFlags.HighAtomic) != 0)
                pfn = zone.RmqueueSmallest(order, MigrateType.HighAtomic);
            if (pfn < 0) pfn = Rmqueue(zone, order, mt, allocFlags);
            if (pfn < 0 && (allocFlags & (AllocFlags.HighAtomic | AllocFlags.Oom)) != 0)
                pfn = zone.RmqueueSmallest(order, MigrateType.HighAtomic);
        }
        return pfn < 0 ? null : _map.PfnToPage(pfn);
    }

    // fallbacks[] from mm/page_alloc.c.
    private static readonly MigrateType[][] s_fallbacks =
    [
        [MigrateType.Reclaimable, MigrateType.Movable],   // Unmovable
        [MigrateType.Reclaimable, MigrateType.Unmovable], // Movable
        [MigrateType.Unmovable, MigrateType.Movable],     // Reclaimable
    ];

    /// <summary>__rmqueue: own type, then claim a pageblock of another type, then steal a block. Zone lock held.</summary>
    private static long Rmqueue(Zone zone, int order, MigrateType mt, AllocFlags allocFlags)
    {
        long pfn = zone.RmqueueSmallest(order, mt);
        if (pfn >= 0) return pfn;
        pfn = RmqueueClaim(zone, order, mt);
        if (pfn >= 0) return pfn;
        return RmqueueSteal(zone, order, mt);
    }

    /// <summary>should_try_claim_block.</summary>
    private static bool ShouldTryClaimBlock(int order, MigrateType startMt) =>
        order >= Zone.PageblockOrder / 2 || startMt == MigrateType.Reclaimable || startMt == MigrateType.Unmovable;

    private static long RmqueueClaim(Zone zone, int order, MigrateType startMt)
    {
        for (int current = Zone.MaxOrder; current >= order; current--)
        {
            int fb = FindSuitableFallback(zone, current, startMt);
            if (fb < 0) continue;
            if (!ShouldTryClaimBlock(current, startMt)) break;
            var fallbackMt = (MigrateType)fb;
            long pfn = zone.FreeListHead(current, fallbackMt);
            // try_to_claim_block
            if (current >= Zone.PageblockOrder)
            {
                zone.DelFromFreeList(pfn, current, fallbackMt);
                zone.SetPageblockRange(pfn, current, startMt);
                zone.Expand(pfn, order, current, startMt);
                return pfn;
            }
            long free = zone.CountPageblock(pfn, out long movable);
            long alike = startMt == MigrateType.Movable ? movable
                : zone.PageblockMigratetype(pfn) == MigrateType.Movable ? Zone.PageblockPages - (free + movable) : 0;
            if (free + alike >= Zone.PageblockPages / 2)
            {
                zone.MoveFreePagesBlock(pfn, startMt);
                return zone.RmqueueSmallest(order, startMt);
            }
        }
        return -1;
    }

    private static long RmqueueSteal(Zone zone, int order, MigrateType startMt)
    {
        for (int current = order; current < Zone.NrOrders; current++)
        {
            int fb = FindSuitableFallback(zone, current, startMt);
            if (fb < 0) continue;
            var fallbackMt = (MigrateType)fb;
            long pfn = zone.FreeListHead(current, fallbackMt);
            zone.DelFromFreeList(pfn, current, fallbackMt);
            zone.Expand(pfn, order, current, fallbackMt);
            return pfn;
        }
        return -1;
    }

    private static int FindSuitableFallback(Zone zone, int order, MigrateType startMt)
    {
        if (zone.NrFree(order) == 0) return -1;
        foreach (var fb in s_fallbacks[(int)startMt])
            if (zone.FreeCount(order, fb) != 0) return (int)fb;
        return -1;
    }

    /// <summary>prep_new_page: reference count, allocation head, compound page, zeroing.</summary>
    private void PrepNewPage(PageFrame* page, int order, Gfp gfp, MigrateType mt)
    {
        InitAllocHead(page, order, mt);
        PageFlags keep = page->Flags & PageFlags.HighMem;
        if (order > 0)
        {
            bool comp = (gfp & Gfp.Comp) != 0;
            if (comp) page->Flags |= PageFlags.Head;
            int head = (int)_map.PageToPfn(page);
            for (int i = 1; i < 1 << order; i++)
            {
                PageFrame* t = page + i;
                t->Flags = keep | (comp ? PageFlags.Tail : 0);
                t->CompoundHead = comp ? head : PageFrame.None;
                t->RefCount = 0;
                t->Order = 0;
                t->MapCount = -1;
            }
        }
        long first = _map.PageToPfn(page);
        if ((gfp & Gfp.Zero) != 0) ZeroWrittenFrames(first, 1L << order);
        _phys.MarkWritten(first, 1L << order);
    }

    /// <summary>
    /// __GFP_ZERO for a new block: clears the frames that may hold data and skips those still zero since boot (or
    /// their last discard). Linux clears every page (or none, with init_on_free); kmem's RAM starts as a zeroed
    /// memfd, and writing zeros over its untouched pages would only make the host fault them in.
    /// </summary>
    private void ZeroWrittenFrames(long pfn, long count)
    {
        long end = pfn + count;
        while (pfn < end)
        {
            while (pfn < end && _phys.IsKnownZero(pfn)) pfn++;
            long run = pfn;
            while (run < end && !_phys.IsKnownZero(run)) run++;
            if (run > pfn) ZeroFrames(pfn, run - pfn);
            pfn = run;
        }
    }

    /// <summary>clear_highpage for a run of frames: through the direct map, or by punching the memfd for HIGHMEM.</summary>
    public void ZeroFrames(long pfn, long count)
    {
        if (pfn < _phys.LowmemPfnEnd || !_phys.HasMemfd)
            NativeMemoryClear(_phys.WindowBase + (nuint)pfn * ArchProfile.PageSize, (nuint)count * ArchProfile.PageSize);
        else
            _phys.DiscardFrames(pfn, count);
    }

    private static void NativeMemoryClear(byte* p, nuint bytes) => System.Runtime.InteropServices.NativeMemory.Clear(p, bytes);

    // =====================================================================================================
    // Free
    // =====================================================================================================

    /// <summary>__free_pages(page, order): drop a reference; at zero the block goes back to the pcp or buddy lists.</summary>
    /// <exception cref="BadPageException">the page is free already, reserved, a tail, not an allocation head, or allocated with another order.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FreePages(PageFrame* page, int order)
    {
        // One combined test for the common case; the cold helper works out what is wrong. (page->Order is a byte, so
        // page->Order != order also rejects orders outside 0..255; BadFree names the exact fault.)
        if (!_map.IsValidPage(page) ||
            (page->Flags & (PageFlags.AllocHead | PageFlags.Buddy | PageFlags.OnPcp | PageFlags.Reserved | PageFlags.Tail | PageFlags.Slab)) != PageFlags.AllocHead ||
            page->Order != order || (uint)order > Zone.MaxOrder || page->RefCount <= 0)
            BadFree(page, order);
        if (--page->RefCount > 0) return;
        if (Tracing.Emit.Tracepoints.MmPageFreeOn) Tracing.Emit.Tracepoints.MmPageFree((nint)page, _map.PageToPfn(page), order);
        if (order <= PerCpuPages.CostlyOrder && FreePcpFast(page, order)) return;
        FreeFrozenPages(page, order);
    }

    /// <summary>
    /// free_frozen_pages for a block of order up to PAGE_ALLOC_COSTLY_ORDER whose pageblock type has a pcp list and
    /// whose CPU's pcp lock is free: clear the allocation state and push it on the list. False (nothing changed) sends
    /// it down the generic path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FreePcpFast(PageFrame* page, int order)
    {
        Zone zone = Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(_zonesByType), (int)page->Zone)!;
        int pfn = (int)_map.PageToPfn(page);
        MigrateType mt = zone.PageblockMigratetype(pfn);
        if (mt >= MigrateType.HighAtomic) return false; // HighAtomic goes to Movable's list, Isolate to the buddy: generic path
        PerCpuPages pcp = zone.Pcp[Cpu.Current(_cpus)];
        if (!pcp.TryLock()) return false;
        for (int i = 1; i < 1 << order; i++)
        {
            PageFrame* t = page + i;
            t->Flags &= PageFlags.HighMem;
            t->CompoundHead = PageFrame.None;
        }
        page->Flags = (page->Flags & PageFlags.HighMem) | PageFlags.OnPcp;
        page->MapCount = -1;
        page->Mapping = 0;
        page->Private = 0;
        page->PcpCpu = (byte)pcp.Cpu;
        page->ListType = mt;
        int li = PerCpuPages.ListIndex(order, mt);
        int head = pcp.Head[li];
        page->Prev = PageFrame.None;
        page->Next = head;
        if (head != PageFrame.None) _map.PfnToPage(head)->Prev = pfn;
        else pcp.Tail[li] = pfn;
        pcp.Head[li] = pfn;
        pcp.StatFree += 1 << order;
        pcp.Count += 1 << order;
        if (pcp.Count >= pcp.High) FreePcppagesBulk(zone, pcp, Math.Max(pcp.Batch, pcp.Count - pcp.High + pcp.Batch));
        pcp.Unlock();
        return true;
    }

    /// <summary>get_page: take another reference on an allocated page.</summary>
    public void GetPage(PageFrame* page)
    {
        page = _map.CompoundHead(page);
        if (page->RefCount <= 0) BadFree(page, page->Order, "get_page on a page with no references");
        page->RefCount++;
    }

    private void FreeFrozenPages(PageFrame* page, int order)
    {
        long pfn = _map.PageToPfn(page);
        if (order > 0)
        {
            for (int i = 1; i < 1 << order; i++)
            {
                PageFrame* t = page + i;
                t->Flags &= PageFlags.HighMem;
                t->CompoundHead = PageFrame.None;
            }
        }
        page->Flags &= PageFlags.HighMem;
        page->MapCount = -1;
        page->Mapping = 0;
        page->Private = 0;
        Zone zone = _zonesByType[(int)page->Zone]!;
        _stat.Add(VmItem.PgFree, 1L << order);
        MigrateType mt = zone.PageblockMigratetype(pfn);
        if (order <= PerCpuPages.CostlyOrder && mt != MigrateType.Isolate)
        {
            if (mt >= MigrateType.HighAtomic) mt = MigrateType.Movable;
            PerCpuPages pcp = zone.Pcp[Cpu.Current(_cpus)];
            if (pcp.TryLock())
            {
                FreeToPcp(zone, pcp, page, pfn, order, mt);
                pcp.Unlock();
                return;
            }
        }
        lock (zone.Lock) zone.FreeOnePage(pfn, order, zone.PageblockMigratetype(pfn));
    }

    private void FreeToPcp(Zone zone, PerCpuPages pcp, PageFrame* page, long pfn, int order, MigrateType mt)
    {
        int li = PerCpuPages.ListIndex(order, mt);
        page->Flags |= PageFlags.OnPcp;
        page->PcpCpu = (byte)pcp.Cpu;
        page->Order = (byte)order;
        page->ListType = mt;
        page->RefCount = 0;
        page->Prev = PageFrame.None;
        page->Next = pcp.Head[li];
        if (pcp.Head[li] != PageFrame.None) _map.PfnToPage(pcp.Head[li])->Prev = (int)pfn;
        else pcp.Tail[li] = (int)pfn;
        pcp.Head[li] = (int)pfn;
        pcp.Count += 1 << order;
        if (pcp.Count >= pcp.High)
            FreePcppagesBulk(zone, pcp, Math.Max(pcp.Batch, pcp.Count - pcp.High + pcp.Batch));
    }

    /// <summary>free_pcppages_bulk: return about <paramref name="count"/> pages, oldest first, round-robin over the lists.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreePcppagesBulk(Zone zone, PerCpuPages pcp, int count)
    {
        count = Math.Min(count, pcp.Count);
        lock (zone.Lock)
        {
            int li = 0;
            int emptyRun = 0;
            while (count > 0 && emptyRun < PerCpuPages.Lists)
            {
                li = (li + 1) % PerCpuPages.Lists;
                int pfn = pcp.Tail[li];
                if (pfn == PageFrame.None)
                {
                    emptyRun++;
                    continue;
                }
                emptyRun = 0;
                PageFrame* p = _map.PfnToPage(pfn);
                pcp.Tail[li] = p->Prev;
                if (p->Prev != PageFrame.None) _map.PfnToPage(p->Prev)->Next = PageFrame.None;
                else pcp.Head[li] = PageFrame.None;
                int order = p->Order;
                p->Flags &= ~PageFlags.OnPcp;
                p->Next = p->Prev = PageFrame.None;
                pcp.Count -= 1 << order;
                count -= 1 << order;
                zone.FreeOnePage(pfn, order, zone.PageblockMigratetype(pfn));
            }
        }
    }

    /// <summary>drain_all_pages: empty every CPU's pcp lists into the buddy lists.</summary>
    public void DrainAllPages()
    {
        foreach (var zone in Zones)
            foreach (var pcp in zone.Pcp)
            {
                pcp.Lock();
                try { FreePcppagesBulk(zone, pcp, pcp.Count); }
                finally { pcp.Unlock(); }
            }
    }

    /// <summary>Pages cached on every CPU's pcp lists of a zone.</summary>
    public long PcpPages(Zone zone)
    {
        long n = 0;
        foreach (var pcp in zone.Pcp) n += Volatile.Read(ref pcp.Count);
        return n;
    }

    // =====================================================================================================
    // The rest of the family
    // =====================================================================================================

    /// <summary>__get_free_pages: like alloc_pages, but returns the direct-map address (never HIGHMEM).</summary>
    public byte* GetFreePages(Gfp gfp, int order)
    {
        if ((gfp & Gfp.HighMem) != 0)
        {
            string msg = $"__get_free_pages: __GFP_HIGHMEM pages have no address (gfp {GfpFormat.Format(gfp)})";
            throw new GfpException(gfp, msg, msg);
        }
        PageFrame* page = AllocPages(gfp, order);
        return page == null ? null : _map.PageAddress(page);
    }

    /// <summary>get_zeroed_page.</summary>
    public byte* GetZeroedPage(Gfp gfp) => GetFreePages(gfp | Gfp.Zero, 0);

    /// <summary>free_pages(addr, order). Null is ignored, as in Linux.</summary>
    public void FreePages(byte* addr, int order)
    {
        if (addr == null) return;
        PageFrame* page = _map.VirtToPage(addr);
        if (page == null || ((nint)addr & (ArchProfile.PageSize - 1)) != 0)
            throw Report(new BadPageException($"BUG: free_pages: {KernelAddress(addr)} is not a page-aligned direct-map address"));
        FreePages(page, order);
    }

    /// <summary>split_page: turn a non-compound order-n allocation into 2^n independent order-0 pages.</summary>
    public void SplitPage(PageFrame* page, int order)
    {
        if (!page->Has(PageFlags.AllocHead) || page->Order != order || page->Has(PageFlags.Head))
            BadFree(page, order, "split_page of a page that is not a non-compound allocation of that order");
        for (int i = 0; i < 1 << order; i++)
        {
            PageFrame* p = page + i;
            p->Flags = (p->Flags & PageFlags.HighMem) | PageFlags.AllocHead;
            p->Order = 0;
            p->RefCount = 1;
            p->ListType = page->ListType;
        }
    }

    /// <summary>alloc_pages_exact: PAGE_ALIGN(size) bytes of contiguous lowmem; the tail beyond it is freed.</summary>
    public byte* AllocPagesExact(nuint size, Gfp gfp)
    {
        if (size == 0) return null;
        int order = GetOrder((long)size);
        if ((gfp & Gfp.Comp) != 0) gfp &= ~Gfp.Comp; // Linux warns and strips __GFP_COMP here
        byte* addr = GetFreePages(gfp, order);
        if (addr == null) return null;
        PageFrame* page = _map.VirtToPage(addr);
        SplitPage(page, order);
        long used = ((long)size + ArchProfile.PageSize - 1) >> ArchProfile.PageShift;
        for (long i = used; i < 1L << order; i++) FreePages(page + i, 0);
        return addr;
    }

    /// <summary>free_pages_exact.</summary>
    public void FreePagesExact(byte* addr, nuint size)
    {
        long pages = ((long)size + ArchProfile.PageSize - 1) >> ArchProfile.PageShift;
        for (long i = 0; i < pages; i++) FreePages(addr + i * ArchProfile.PageSize, 0);
    }

    /// <summary>get_order(size): the smallest order whose block holds <paramref name="size"/> bytes.</summary>
    public static int GetOrder(long size)
    {
        if (size <= ArchProfile.PageSize) return 0;
        return 64 - System.Numerics.BitOperations.LeadingZeroCount((ulong)((size - 1) >> ArchProfile.PageShift));
    }

    // =====================================================================================================
    // Reports
    // =====================================================================================================

    private string KernelAddress(void* p) => "0x" + _phys.ToKernelVirtual(p).ToString(Profile.AddressHexDigits == 8 ? "x8" : "x16");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void BadFree(PageFrame* page, int order, string? reason = null)
    {
        if (!_map.IsValidPage(page))
            throw Report(new BadPageException($"BUG: Bad page state: {(nint)page:x} is not a page descriptor of this machine (order:{order})"));
        if (reason == null)
        {
            if ((uint)order > Zone.MaxOrder) reason = $"order {order} above MAX_PAGE_ORDER";
            else if (page->Has(PageFlags.Buddy) || page->Has(PageFlags.OnPcp)) reason = "freeing a free page (double free)";
            else if (page->Has(PageFlags.Reserved)) reason = "PAGE_FLAGS_CHECK_AT_FREE flag(s) set (reserved page)";
            else if (page->Has(PageFlags.Tail)) reason = "freeing a tail page of a compound page";
            else if (page->Has(PageFlags.Slab)) reason = "freeing a slab page with __free_pages";
            else if (!page->Has(PageFlags.AllocHead)) reason = "freeing a page that is not the first page of an allocation";
            else if (page->Order != order) reason = $"wrong order: allocated with order:{page->Order}, freed with order:{order}";
            else reason = "nonzero _refcount";
        }
        throw Report(new BadPageException(BadPageText(page, order, reason)));
    }

    /// <summary>The text of Linux's bad_page() + dump_page().</summary>
    public string BadPageText(PageFrame* page, int order, string reason)
    {
        long pfn = _map.PageToPfn(page);
        var sb = new StringBuilder();
        sb.Append($"BUG: Bad page state in process {CurrentTask.Comm}  pfn:{pfn:x5}\n");
        sb.Append($"page: refcount:{page->RefCount} mapcount:{page->MapCount + 1} mapping:{(ulong)page->Mapping:x16} index:0x0 pfn:0x{pfn:x}\n");
        sb.Append($"flags: 0x{(ulong)page->Flags:x}({FormatPageFlags(page->Flags)}) zone:{ZoneNames.Of(page->Zone)} order:{order}\n");
        sb.Append($"page dumped because: {reason}");
        return sb.ToString();
    }

    public static string FormatPageFlags(PageFlags f)
    {
        if (f == 0) return "";
        var names = new List<string>();
        foreach (PageFlags bit in Enum.GetValues<PageFlags>())
            if (bit != 0 && (f & bit) == bit) names.Add(bit.ToString().ToLowerInvariant());
        return string.Join('|', names);
    }

    private T Report<T>(T ex) where T : KmemException
    {
        _log.Write(LogLevel.Alert, ex.Report);
        return ex;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowOrderTooLarge(Gfp gfp, int order) =>
        throw Report(new BadPageException($"WARNING: alloc_pages: order:{order} is above MAX_PAGE_ORDER ({Zone.MaxOrder}), mode:{FormatMode(gfp)}"));

    private static string FormatMode(Gfp gfp) => $"0x{(uint)gfp:x}({GfpFormat.Format(gfp)})";

    /// <summary>warn_alloc: rate-limited as Linux's (10 reports per 5 s), with a show_free_areas summary.</summary>
    private void WarnAlloc(Gfp gfp, int order)
    {
        if ((gfp & Gfp.NoWarn) != 0 || !_warnRatelimit.Allow()) return;
        _log.Write(LogLevel.Warning, $"{CurrentTask.Comm}: page allocation failure: order:{order}, mode:{FormatMode(gfp)}, nodemask=(null)\n{ShowFreeAreas()}");
    }

    /// <summary>A show_free_areas-like summary: per zone free/min/low/high/managed, then the buddy counts.</summary>
    public string ShowFreeAreas()
    {
        var sb = new StringBuilder("Mem-Info:\n");
        foreach (var z in Zones)
        {
            sb.Append($"Node 0 {z.Name} free:{z.FreePages * 4}kB boost:0kB min:{z.WmarkMin * 4}kB low:{z.WmarkLow * 4}kB high:{z.WmarkHigh * 4}kB ");
            sb.Append($"present:{z.PresentPages * 4}kB managed:{z.ManagedPages * 4}kB pcp:{PcpPages(z) * 4}kB\n");
        }
        foreach (var z in Zones)
        {
            sb.Append($"Node 0 {z.Name}: ");
            long total = 0;
            for (int o = 0; o < Zone.NrOrders; o++)
            {
                long n = z.NrFree(o);
                total += n << o;
                sb.Append($"{n}*{4 << o}kB ");
            }
            sb.Append($"= {total * 4}kB\n");
        }
        return sb.ToString().TrimEnd('\n');
    }

    /// <summary>Check every zone's invariants; null when all hold.</summary>
    public string? CheckInvariants()
    {
        foreach (var z in Zones)
            if (z.CheckInvariants() is { } err) return err;
        return null;
    }
}

/// <summary>A bad page operation (Linux's bad_page and VM_BUG_ON_PAGE reports).</summary>
public sealed class BadPageException : KmemException
{
    public BadPageException(string report) : base(report) { }
}
