using System.Runtime.CompilerServices;
using Kmem.Diagnostics;
using Kmem.PageAlloc;
using Kmem.Physical;

namespace Kmem.Reclaim;

/// <summary>Linux's enum lru_list (without the unevictable list).</summary>
public enum LruList
{
    InactiveAnon = 0,
    ActiveAnon = 1,
    InactiveFile = 2,
    ActiveFile = 3,
}

/// <summary>
/// The node's LRU lists (lruvec): intrusive doubly linked lists of allocated user and page-cache pages, threaded
/// through <see cref="PageFrame.Next"/>/<see cref="PageFrame.Prev"/> by PFN. New pages go to the head; reclaim scans
/// from the tail (oldest first).
/// </summary>
/// <remarks>
/// States (flag combinations): on an LRU list ⇔ <see cref="PageFlags.Lru"/>; which list: <see cref="PageFlags.SwapBacked"/>
/// (anon vs file) and <see cref="PageFlags.Active"/>. Locking: <see cref="LruLock"/> (lruvec->lru_lock) protects the
/// links, the heads, the counts and the Lru/Active bits; it nests inside an owner's lock and outside pcp/zone locks.
/// Page flags of LRU pages are changed with atomic operations (<see cref="PageFlagOps"/>), because owners set
/// Referenced/Dirty under their own lock while reclaim ages pages under this one.
/// Accounting: nr_{in,}active_{anon,file}, nr_anon_pages and nr_file_pages follow list membership.
/// </remarks>
public sealed unsafe class Lru
{
    private readonly MemMap _map;
    private readonly VmStat _stat;
    private readonly int[] _head = [PageFrame.None, PageFrame.None, PageFrame.None, PageFrame.None];
    private readonly int[] _tail = [PageFrame.None, PageFrame.None, PageFrame.None, PageFrame.None];
    private readonly long[] _count = new long[4];
    // Pages on any LRU list, per zone type (zone_reclaimable_pages needs per-zone numbers): [zone * 2 + (anon?0:1)].
    private readonly long[] _zoneCount = new long[12];

    public Lock LruLock { get; } = new();

    internal Lru(MemMap map, VmStat stat)
    {
        _map = map;
        _stat = stat;
    }

    public long Count(LruList l) => Volatile.Read(ref _count[(int)l]);
    public long ZoneAnon(ZoneType z) => Volatile.Read(ref _zoneCount[(int)z * 2]);
    public long ZoneFile(ZoneType z) => Volatile.Read(ref _zoneCount[(int)z * 2 + 1]);

    public static LruList ListOf(PageFrame* page) =>
        (LruList)((page->Has(PageFlags.SwapBacked) ? 0 : 2) + (page->Has(PageFlags.Active) ? 1 : 0));

    private static VmItem Item(LruList l) => l switch
    {
        LruList.InactiveAnon => VmItem.NrInactiveAnon,
        LruList.ActiveAnon => VmItem.NrActiveAnon,
        LruList.InactiveFile => VmItem.NrInactiveFile,
        _ => VmItem.NrActiveFile,
    };

    /// <summary>lru_cache_add / folio_add_lru: put an allocated page at the head of its list. Takes the LRU lock.</summary>
    public void Add(PageFrame* page, bool anon, bool active)
    {
        lock (LruLock)
        {
            if (page->Has(PageFlags.Lru)) throw new BadPageException($"BUG: lru_cache_add: pfn {_map.PageToPfn(page):x} is already on an LRU list");
            PageFlagOps.Set(page, PageFlags.Lru | (anon ? PageFlags.SwapBacked : 0) | (active ? PageFlags.Active : 0));
            if (!anon) PageFlagOps.Clear(page, PageFlags.SwapBacked);
            if (!active) PageFlagOps.Clear(page, PageFlags.Active);
            Link(page, ListOf(page));
            _zoneCount[(int)page->Zone * 2 + (anon ? 0 : 1)]++;
            _stat.Inc(anon ? VmItem.NrAnonPages : VmItem.NrFilePages);
        }
    }

    /// <summary>Take a page off its list for good (the owner is about to free it). Takes the LRU lock.</summary>
    public void Del(PageFrame* page)
    {
        lock (LruLock)
        {
            if (!page->Has(PageFlags.Lru)) throw new BadPageException($"BUG: lru del: pfn {_map.PageToPfn(page):x} is not on an LRU list");
            bool anon = page->Has(PageFlags.SwapBacked);
            Unlink(page, ListOf(page));
            PageFlagOps.Clear(page, PageFlags.Lru | PageFlags.Active | PageFlags.Referenced);
            _zoneCount[(int)page->Zone * 2 + (anon ? 0 : 1)]--;
            _stat.Add(anon ? VmItem.NrAnonPages : VmItem.NrFilePages, -1);
        }
    }

    /// <summary>
    /// mark_page_accessed: an unreferenced page becomes referenced; a referenced page on the inactive list is
    /// activated (and its referenced bit cleared). Takes the LRU lock only for the activation.
    /// </summary>
    public void MarkPageAccessed(PageFrame* page)
    {
        if (!PageFlagOps.TestAndSet(page, PageFlags.Referenced)) return;
        if (page->Has(PageFlags.Active)) return;
        lock (LruLock)
        {
            if (page->Has(PageFlags.Lru) && !page->Has(PageFlags.Active))
            {
                MoveLocked(page, active: true);
                PageFlagOps.Clear(page, PageFlags.Referenced);
            }
        }
    }

    /// <summary>Move a page between the active and inactive list of its type (activate / deactivate). LRU lock held.</summary>
    internal void MoveLocked(PageFrame* page, bool active)
    {
        LruList from = ListOf(page);
        Unlink(page, from);
        if (active) PageFlagOps.Set(page, PageFlags.Active);
        else PageFlagOps.Clear(page, PageFlags.Active);
        Link(page, ListOf(page));
    }

    /// <summary>Move the page to the head of its own list (rotate). LRU lock held.</summary>
    internal void RotateLocked(PageFrame* page)
    {
        LruList l = ListOf(page);
        if (_head[(int)l] == (int)_map.PageToPfn(page)) return;
        Unlink(page, l);
        Link(page, l);
    }

    /// <summary>The oldest page of a list, or null. LRU lock held.</summary>
    internal PageFrame* TailLocked(LruList l) => _tail[(int)l] == PageFrame.None ? null : _map.PfnToPage(_tail[(int)l]);

    /// <summary>Replace <paramref name="old"/> by <paramref name="repl"/> at the same place (migration). LRU lock held by the caller.</summary>
    internal void ReplaceLocked(PageFrame* old, PageFrame* repl)
    {
        LruList l = ListOf(old);
        bool anon = old->Has(PageFlags.SwapBacked);
        PageFlags keep = old->Flags & (PageFlags.Lru | PageFlags.Active | PageFlags.SwapBacked | PageFlags.Referenced | PageFlags.Dirty);
        int pfn = (int)_map.PageToPfn(repl);
        repl->Prev = old->Prev;
        repl->Next = old->Next;
        if (old->Prev != PageFrame.None) _map.PfnToPage(old->Prev)->Next = pfn; else _head[(int)l] = pfn;
        if (old->Next != PageFrame.None) _map.PfnToPage(old->Next)->Prev = pfn; else _tail[(int)l] = pfn;
        old->Next = old->Prev = PageFrame.None;
        PageFlagOps.Clear(old, keep);
        PageFlagOps.Set(repl, keep);
        _zoneCount[(int)old->Zone * 2 + (anon ? 0 : 1)]--;
        _zoneCount[(int)repl->Zone * 2 + (anon ? 0 : 1)]++;
    }

    private void Link(PageFrame* page, LruList l)
    {
        int pfn = (int)_map.PageToPfn(page);
        int li = (int)l;
        page->Prev = PageFrame.None;
        page->Next = _head[li];
        if (_head[li] != PageFrame.None) _map.PfnToPage(_head[li])->Prev = pfn;
        else _tail[li] = pfn;
        _head[li] = pfn;
        _count[li]++;
        _stat.Inc(Item(l));
    }

    private void Unlink(PageFrame* page, LruList l)
    {
        int li = (int)l;
        if (page->Prev != PageFrame.None) _map.PfnToPage(page->Prev)->Next = page->Next;
        else _head[li] = page->Next;
        if (page->Next != PageFrame.None) _map.PfnToPage(page->Next)->Prev = page->Prev;
        else _tail[li] = page->Prev;
        page->Next = page->Prev = PageFrame.None;
        _count[li]--;
        _stat.Add(Item(l), -1);
    }
}

/// <summary>Atomic page-flag updates (set_bit/clear_bit/test_and_clear_bit on page->flags).</summary>
public static unsafe class PageFlagOps
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(PageFrame* page, PageFlags f) => Interlocked.Or(ref *(ulong*)&page->Flags, (ulong)f);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Clear(PageFrame* page, PageFlags f) => Interlocked.And(ref *(ulong*)&page->Flags, ~(ulong)f);

    /// <summary>test_and_clear_bit: was any of <paramref name="f"/> set?</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TestAndClear(PageFrame* page, PageFlags f) => (Interlocked.And(ref *(ulong*)&page->Flags, ~(ulong)f) & (ulong)f) != 0;

    /// <summary>test_and_set_bit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TestAndSet(PageFrame* page, PageFlags f) => (Interlocked.Or(ref *(ulong*)&page->Flags, (ulong)f) & (ulong)f) != 0;
}
