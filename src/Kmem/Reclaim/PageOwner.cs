using Kmem.Physical;

namespace Kmem.Reclaim;

/// <summary>
/// The owner of reclaimable or movable pages: an address space (a process's mm for anonymous pages, a file's page
/// cache). A page's <see cref="PageFrame.Mapping"/> holds its owner's <see cref="OwnerId"/> and
/// <see cref="PageFrame.Private"/> its index (virtual page number, or file page index), as page->mapping and
/// page->index do in Linux; reclaim and compaction find the owner through <see cref="Reclaimer.Owner"/>.
/// </summary>
/// <remarks>
/// Protocol: reclaim takes <see cref="OwnerLock"/> with TryEnter (trylock_page: a busy owner is skipped, never waited
/// for), then checks <see cref="StillOwns"/> before touching the page. Every method below runs with that lock held.
/// An owner never holds its lock while allocating memory, so reclaim running inside any allocation can always make
/// progress on other owners, and the OOM killer can always take a victim's lock.
/// </remarks>
public unsafe interface IPageOwner
{
    int OwnerId { get; }
    object OwnerLock { get; }
    /// <summary>Is <paramref name="page"/> still this owner's page at <paramref name="index"/>?</summary>
    bool StillOwns(PageFrame* page, long index);
    /// <summary>Anonymous page: copy it to swap slot <paramref name="slot"/> and replace its mapping by the swap entry.</summary>
    void SwapOut(PageFrame* page, long index, long slot);
    /// <summary>Dirty file page: write it back to its backing store and clear PG_dirty.</summary>
    void Writeback(PageFrame* page, long index);
    /// <summary>Clean file page: remove it from the page cache (the caller frees the frame).</summary>
    void Evict(PageFrame* page, long index);
    /// <summary>Migration: the contents were copied to <paramref name="to"/>; point the mapping at it.</summary>
    void Migrated(PageFrame* from, PageFrame* to, long index);
}
