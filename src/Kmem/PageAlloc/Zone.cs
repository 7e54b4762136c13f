using System.Diagnostics;
using System.Runtime.CompilerServices;
using Kmem.Physical;

namespace Kmem.PageAlloc;

/// <summary>
/// A zone: a PFN range with its own buddy free lists, watermarks, lowmem protection and per-CPU page lists.
/// </summary>
/// <remarks>
/// Data structures: for each order 0..MAX_PAGE_ORDER and migratetype, a doubly linked list of free blocks threaded
/// through <see cref="PageFrame.Next"/>/<see cref="PageFrame.Prev"/> by PFN. A free block's first page has
/// <see cref="PageFlags.Buddy"/> set and its order in <see cref="PageFrame.Order"/>; its other pages carry no state.
/// Each pageblock (2^pageblock_order pages) has a migratetype in <see cref="_pageblockType"/>; free blocks sit on the
/// list of their pageblock's type (a block larger than a pageblock takes the type of its first pageblock).
///
/// Locking: <see cref="Lock"/> (one per zone) protects the free lists, <see cref="_nrFree"/>, <see cref="_freeCount"/>,
/// <see cref="FreePages"/>, the pageblock types, and the buddy fields of every free page. It nests inside a
/// <see cref="PerCpuPages"/> lock (pcp, then zone), never the other way round.
///
/// Invariants, checked by <see cref="CheckInvariants"/> in tests: every Buddy page is on exactly the list of its
/// order and type; counts equal list lengths; FreePages = sum over orders of nr_free * 2^order; no two free buddies
/// of the same order are both free (they would have merged).
/// </remarks>
public sealed unsafe class Zone
{
    /// <summary>MAX_PAGE_ORDER.</summary>
    public const int MaxOrder = 10;
    public const int NrOrders = MaxOrder + 1;
    /// <summary>pageblock_order on x86 with 4 KiB pages and 2 MiB huge pages.</summary>
    public const int PageblockOrder = 9;
    public const int PageblockPages = 1 << PageblockOrder;
    /// <summary>MIGRATE_TYPES in the free lists (Unmovable, Movable, Reclaimable, HighAtomic, Isolate).</summary>
    public const int MigrateTypes = 5;

    private readonly MemMap _map;
    private readonly int[] _freeHead = new int[NrOrders * MigrateTypes];
    private readonly long[] _freeCount = new long[NrOrders * MigrateTypes];
    private readonly long[] _nrFree = new long[NrOrders];
    private readonly MigrateType[] _pageblockType;
    private long _freePages;

    public ZoneType Type { get; }
    public string Name { get; }
    public long StartPfn { get; }
    public long EndPfn { get; }
    public long SpannedPages => EndPfn - StartPfn;
    public long PresentPages { get; }
    public long ManagedPages { get; internal set; }
    public bool IsHighMem => Type == ZoneType.HighMem;

    // Watermarks, in pages (zone->_watermark[]).
    public long WmarkMin { get; internal set; }
    public long WmarkLow
    {
        get => _wmarkLow;
        internal set
        {
            _wmarkLow = value;
            UpdateFastMarks();
        }
    }
    private long _wmarkLow;
    public long WmarkHigh { get; internal set; }
    public long WmarkPromo { get; internal set; }
    /// <summary>Temporary boost (watermark_boost); kmem never boosts, so this stays 0.</summary>
    public long WatermarkBoost
    {
        get => _watermarkBoost;
        internal set
        {
            _watermarkBoost = value;
            UpdateFastMarks();
        }
    }
    private long _watermarkBoost;
    /// <summary>lowmem_reserve[], indexed by <see cref="ZoneType"/>: pages kept back from allocations whose highest zone is that type.</summary>
    public long[] LowmemReserve { get; } = new long[6];

    // low watermark + boost + lowmem_reserve[highest], per highest zone: the order-0 fast path's one comparison.
    // Recomputed by UpdateFastMarks whenever a watermark, the boost or the protection changes.
    private readonly long[] _fastMark = new long[6];

    /// <summary>The mark an order-0 fast-path allocation must exceed: low watermark + boost + protection for <paramref name="highest"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long FastMark(ZoneType highest) => Volatile.Read(ref _fastMark[(int)highest]);

    /// <summary>Recompute <see cref="FastMark"/>: the WmarkLow and WatermarkBoost setters do; call it after writing <see cref="LowmemReserve"/>.</summary>
    public void UpdateFastMarks()
    {
        for (int i = 0; i < _fastMark.Length; i++) Volatile.Write(ref _fastMark[i], WmarkLow + WatermarkBoost + LowmemReserve[i]);
    }

    /// <summary>The zone lock (zone->lock).</summary>
    public Lock Lock { get; } = new();

    public PerCpuPages[] Pcp { get; }

    /// <summary>NR_FREE_PAGES: pages on the buddy lists (pages cached per CPU are not counted, as in Linux).</summary>
    public long FreePages => Volatile.Read(ref _freePages);

    internal Zone(MemMap map, ZoneSpan span, int cpus)
    {
        _map = map;
        Type = span.Type;
        Name = ZoneNames.Of(span.Type);
        StartPfn = span.StartPfn;
        EndPfn = span.EndPfn;
        PresentPages = span.PresentPages;
        Array.Fill(_freeHead, PageFrame.None);
        long firstBlock = StartPfn >> PageblockOrder;
        long lastBlock = (EndPfn - 1) >> PageblockOrder;
        // At boot every pageblock is MIGRATE_MOVABLE (memmap_init_range), as in Linux.
        _pageblockType = new MigrateType[Math.Max(0, lastBlock - firstBlock + 1)];
        Array.Fill(_pageblockType, MigrateType.Movable);
        Pcp = new PerCpuPages[cpus];
        for (int c = 0; c < cpus; c++) Pcp[c] = new PerCpuPages(c);
    }

    public bool Contains(long pfn) => pfn >= StartPfn && pfn < EndPfn;

    /// <summary>Free blocks of <paramref name="order"/> (free_area[order].nr_free).</summary>
    public long NrFree(int order) => Volatile.Read(ref _nrFree[order]);

    /// <summary>Free blocks of <paramref name="order"/> on the <paramref name="mt"/> list.</summary>
    public long FreeCount(int order, MigrateType mt) => Volatile.Read(ref _freeCount[order * MigrateTypes + (int)mt]);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public MigrateType PageblockMigratetype(long pfn) => _pageblockType[(pfn >> PageblockOrder) - (StartPfn >> PageblockOrder)];

    internal void SetPageblockMigratetype(long pfn, MigrateType mt) => _pageblockType[(pfn >> PageblockOrder) - (StartPfn >> PageblockOrder)] = mt;

    /// <summary>Pageblocks of each type (pagetypeinfo's "Number of blocks type").</summary>
    public long PageblockCount(MigrateType mt)
    {
        long n = 0;
        foreach (var t in _pageblockType) if (t == mt) n++;
        return n;
    }

    // ---- free-list primitives (zone lock held) ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void AddToFreeList(long pfn, int order, MigrateType mt, bool tail = false)
    {
        PageFrame* page = _map.PfnToPage(pfn);
        Debug.Assert(!page->Has(PageFlags.Buddy | PageFlags.OnPcp | PageFlags.Reserved), "page already free or reserved");
        int li = order * MigrateTypes + (int)mt;
        page->Flags = (page->Flags & PageFlags.HighMem) | PageFlags.Buddy;
        page->Order = (byte)order;
        page->ListType = mt;
        page->RefCount = 0;
        int head = _freeHead[li];
        if (tail && head != PageFrame.None)
        {
            // Walk to the end only for the rare "add to tail" hint; lists are short at high orders.
            int last = head;
            while (_map.PfnToPage(last)->Next != PageFrame.None) last = _map.PfnToPage(last)->Next;
            page->Prev = last;
            page->Next = PageFrame.None;
            _map.PfnToPage(last)->Next = (int)pfn;
        }
        else
        {
            page->Prev = PageFrame.None;
            page->Next = head;
            if (head != PageFrame.None) _map.PfnToPage(head)->Prev = (int)pfn;
            _freeHead[li] = (int)pfn;
        }
        _freeCount[li]++;
        _nrFree[order]++;
        _freePages += 1L << order;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void DelFromFreeList(long pfn, int order, MigrateType mt)
    {
        PageFrame* page = _map.PfnToPage(pfn);
        Debug.Assert(page->Has(PageFlags.Buddy) && page->Order == order && page->ListType == mt, "free list corrupted");
        int li = order * MigrateTypes + (int)mt;
        if (page->Prev != PageFrame.None) _map.PfnToPage(page->Prev)->Next = page->Next;
        else _freeHead[li] = page->Next;
        if (page->Next != PageFrame.None) _map.PfnToPage(page->Next)->Prev = page->Prev;
        page->Next = page->Prev = PageFrame.None;
        page->Flags &= ~PageFlags.Buddy;
        _freeCount[li]--;
        _nrFree[order]--;
        _freePages -= 1L << order;
    }

    internal int FreeListHead(int order, MigrateType mt) => _freeHead[order * MigrateTypes + (int)mt];

    /// <summary>expand(): split a block of <paramref name="high"/> down to <paramref name="low"/>, returning the upper halves to the free lists.</summary>
    internal void Expand(long pfn, int low, int high, MigrateType mt)
    {
        long size = 1L << high;
        while (high > low)
        {
            high--;
            size >>= 1;
            AddToFreeList(pfn + size, high, mt);
        }
    }

    /// <summary>__rmqueue_smallest: the smallest free block of at least <paramref name="order"/> on the <paramref name="mt"/> lists, split down.</summary>
    internal long RmqueueSmallest(int order, MigrateType mt)
    {
        for (int o = order; o < NrOrders; o++)
        {
            int pfn = _freeHead[o * MigrateTypes + (int)mt];
            if (pfn == PageFrame.None) continue;
            DelFromFreeList(pfn, o, mt);
            Expand(pfn, order, o, mt);
            return pfn;
        }
        return -1;
    }

    /// <summary>
    /// __free_one_page: put a block back and merge it with its buddy (pfn ^ 2^order) while the buddy is free, of the
    /// same order and zone. Merging across pageblocks of different types is allowed for mergeable types; the merged
    /// block then takes the freed block's type (as Linux 6.10+).
    /// </summary>
    internal void FreeOnePage(long pfn, int order, MigrateType mt)
    {
        while (order < MaxOrder)
        {
            long buddyPfn = pfn ^ (1L << order);
            if (buddyPfn < StartPfn || buddyPfn >= EndPfn) break;
            PageFrame* buddy = _map.PfnToPage(buddyPfn);
            if (!buddy->Has(PageFlags.Buddy) || buddy->Order != order) break;
            MigrateType buddyMt = buddy->ListType;
            if (buddyMt != mt && (!IsMergeable(mt) || !IsMergeable(buddyMt))) break;
            DelFromFreeList(buddyPfn, order, buddyMt);
            if (buddyMt != mt && order >= PageblockOrder)
                SetPageblockRange(buddyPfn, order, mt);
            pfn &= buddyPfn;
            order++;
        }
        // Linux adds to the tail when the next-order buddy is free, hoping the block merges soon; kmem keeps LIFO.
        AddToFreeList(pfn, order, mt);
    }

    private static bool IsMergeable(MigrateType mt) => mt != MigrateType.Isolate;

    internal void SetPageblockRange(long pfn, int order, MigrateType mt)
    {
        long blocks = Math.Max(1, (1L << order) >> PageblockOrder);
        for (long b = 0; b < blocks; b++) SetPageblockMigratetype(pfn + (b << PageblockOrder), mt);
    }

    /// <summary>
    /// Count what one pageblock holds (prep_move_freepages_block): returns its free pages; <paramref name="movable"/>
    /// gets the allocated pages whose allocation migratetype was Movable.
    /// </summary>
    internal long CountPageblock(long anyPfn, out long movable)
    {
        long start = Math.Max(anyPfn & ~(long)(PageblockPages - 1), StartPfn);
        long end = Math.Min((anyPfn | (PageblockPages - 1)) + 1, EndPfn);
        long free = 0;
        movable = 0;
        for (long pfn = start; pfn < end;)
        {
            PageFrame* p = _map.PfnToPage(pfn);
            if (p->Has(PageFlags.Buddy))
            {
                free += 1L << p->Order;
                pfn += 1L << p->Order;
                continue;
            }
            if (p->Has(PageFlags.AllocHead) && p->ListType == MigrateType.Movable)
            {
                long n = 1L << p->Order;
                movable += n;
                pfn += n;
                continue;
            }
            pfn++;
        }
        return free;
    }

    /// <summary>__move_freepages_block: move the pageblock's free blocks to the <paramref name="to"/> lists and retype it.</summary>
    internal void MoveFreePagesBlock(long anyPfn, MigrateType to)
    {
        long start = Math.Max(anyPfn & ~(long)(PageblockPages - 1), StartPfn);
        long end = Math.Min((anyPfn | (PageblockPages - 1)) + 1, EndPfn);
        for (long pfn = start; pfn < end;)
        {
            PageFrame* p = _map.PfnToPage(pfn);
            if (p->Has(PageFlags.Buddy))
            {
                int o = p->Order;
                if (p->ListType != to)
                {
                    DelFromFreeList(pfn, o, p->ListType);
                    AddToFreeList(pfn, o, to);
                }
                pfn += 1L << o;
                continue;
            }
            pfn++;
        }
        SetPageblockMigratetype(start, to);
    }

    /// <summary>Free pages in blocks of at least pageblock order (6.18's nr_free_pages_blocks).</summary>
    public long FreePagesInBlocks()
    {
        long n = 0;
        for (int o = PageblockOrder; o < NrOrders; o++) n += NrFree(o) << o;
        return n;
    }

    /// <summary>Walk every list and check the invariants in the remarks; returns a description of the first violation, or null.</summary>
    public string? CheckInvariants()
    {
        lock (Lock)
        {
            long pages = 0;
            for (int o = 0; o < NrOrders; o++)
            {
                long blocks = 0;
                for (int t = 0; t < MigrateTypes; t++)
                {
                    long n = 0;
                    int prev = PageFrame.None;
                    for (int pfn = _freeHead[o * MigrateTypes + t]; pfn != PageFrame.None; pfn = _map.PfnToPage(pfn)->Next)
                    {
                        PageFrame* p = _map.PfnToPage(pfn);
                        if (!Contains(pfn)) return $"{Name}: pfn {pfn:x} on a free list is outside the zone";
                        if (!p->Has(PageFlags.Buddy)) return $"{Name}: pfn {pfn:x} on order-{o} list is not PageBuddy";
                        if (p->Order != o) return $"{Name}: pfn {pfn:x} on order-{o} list has order {p->Order}";
                        if ((int)p->ListType != t) return $"{Name}: pfn {pfn:x} on type-{t} list says type {p->ListType}";
                        if (p->Prev != prev) return $"{Name}: pfn {pfn:x} has a broken back link";
                        if ((pfn & ((1 << o) - 1)) != 0) return $"{Name}: pfn {pfn:x} is not aligned to order {o}";
                        long buddy = pfn ^ (1L << o);
                        if (o < MaxOrder && Contains(buddy))
                        {
                            PageFrame* b = _map.PfnToPage(buddy);
                            if (b->Has(PageFlags.Buddy) && b->Order == o && IsMergeable(b->ListType) && IsMergeable(p->ListType))
                                return $"{Name}: buddies {pfn:x} and {buddy:x} of order {o} are both free";
                        }
                        prev = pfn;
                        n++;
                        if (n > MaxPfnGuard) return $"{Name}: order-{o} list loops";
                    }
                    if (n != _freeCount[o * MigrateTypes + t]) return $"{Name}: order-{o} type-{t} count {_freeCount[o * MigrateTypes + t]} but list has {n}";
                    blocks += n;
                }
                if (blocks != _nrFree[o]) return $"{Name}: nr_free[{o}]={_nrFree[o]} but lists hold {blocks}";
                pages += blocks << o;
            }
            if (pages != _freePages) return $"{Name}: NR_FREE_PAGES={_freePages} but lists hold {pages}";
        }
        return null;
    }

    private long MaxPfnGuard => SpannedPages + 1;

    public override string ToString() => $"zone {Name} [{StartPfn:x}-{EndPfn:x}) managed {ManagedPages} free {FreePages}";
}
