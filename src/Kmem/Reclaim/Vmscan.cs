using Kmem.HighMem;
using Kmem.Diagnostics;
using Kmem.PageAlloc;
using Kmem.Physical;

namespace Kmem.Reclaim;

/// <summary>struct scan_control: one reclaim pass's parameters and results.</summary>
public sealed class ScanControl
{
    public Gfp Gfp;
    public int Order;
    public int Priority = Reclaimer.DefPriority;
    /// <summary>reclaim_idx: pages in zones above it are skipped.</summary>
    public ZoneType ReclaimIdx;
    public long NrToReclaim = Reclaimer.SwapClusterMax;
    public bool IsKswapd;
    public long NrScanned;
    public long NrReclaimed;
    /// <summary>Dirty file pages left alone because the gfp forbade writeback.</summary>
    public long NrDirtySkipped;
    /// <summary>Anonymous pages left alone because the gfp forbade I/O or swap was full.</summary>
    public long NrAnonSkipped;
    public long NrWritten;
    public long NrSwappedOut;
    public long SlabObjectsFreed;

    /// <summary>may_enter_fs for swap: __GFP_IO.</summary>
    public bool MaySwap => (Gfp & Gfp.Io) != 0;
    /// <summary>Writing back a dirty file page needs __GFP_IO and __GFP_FS.</summary>
    public bool MayWriteback => (Gfp & (Gfp.Io | Gfp.Fs)) == (Gfp.Io | Gfp.Fs);
}

public sealed unsafe partial class Reclaimer
{
    /// <summary>Totals of every reclaim pass (for summaries).</summary>
    public long DirectReclaimRuns => Interlocked.Read(ref _directRuns);
    private long _directRuns;

    /// <summary>try_to_free_pages: direct reclaim in the allocating thread. Returns pages reclaimed.</summary>
    public long TryToFreePages(Gfp gfp, int order, ZoneType highest)
    {
        if (Tracing.Emit.Tracepoints.DirectReclaimBeginOn) Tracing.Emit.Tracepoints.DirectReclaimBegin(order, gfp);
        var sc = new ScanControl { Gfp = gfp, Order = order, ReclaimIdx = highest };
        Interlocked.Increment(ref _directRuns);
        _stat.Inc(VmStat.AllocStallFor(EffectiveZone(highest)));
        DoTryToFreePages(sc);
        if (sc.NrReclaimed > 0) Kswapd.ResetFailures();
        if (Tracing.Emit.Tracepoints.DirectReclaimEndOn) Tracing.Emit.Tracepoints.DirectReclaimEnd((ulong)sc.NrReclaimed);
        return sc.NrReclaimed;
    }

    private ZoneType EffectiveZone(ZoneType highest)
    {
        for (int zi = (int)highest; zi >= 0; zi--)
            if (_pa.GetZone((ZoneType)zi) != null) return (ZoneType)zi;
        return highest;
    }

    /// <summary>do_try_to_free_pages: raise the priority until enough is reclaimed.</summary>
    internal void DoTryToFreePages(ScanControl sc)
    {
        for (sc.Priority = DefPriority; sc.Priority >= 0; sc.Priority--)
        {
            ShrinkNode(sc);
            if (sc.NrReclaimed >= sc.NrToReclaim) break;
        }
        if (sc.NrReclaimed > 0) NotifyFreed();
    }

    /// <summary>shrink_node: age the active lists, shrink the inactive lists in swappiness proportion, then the shrinkers.</summary>
    internal void ShrinkNode(ScanControl sc)
    {
        bool swapOk = sc.MaySwap && Swap != null && Swap.FreePages > 0;
        // inactive_is_low with inactive_ratio 1 (lists below 1 GiB): refill the inactive list from the active one.
        if (Lru.Count(LruList.InactiveFile) < Lru.Count(LruList.ActiveFile))
            ShrinkActive(LruList.ActiveFile, ScanCount(LruList.ActiveFile, sc.Priority), sc);
        if (swapOk && Lru.Count(LruList.InactiveAnon) < Lru.Count(LruList.ActiveAnon))
            ShrinkActive(LruList.ActiveAnon, ScanCount(LruList.ActiveAnon, sc.Priority), sc);

        long file = ScanCount(LruList.InactiveFile, sc.Priority);
        long anon = swapOk ? ScanCount(LruList.InactiveAnon, sc.Priority) : 0;
        if (swapOk && file > 0 && anon > 0)
        {
            // get_scan_count SCAN_FRACT: anon weighs swappiness, file 200 - swappiness.
            anon = Math.Max(1, anon * Swappiness / 100);
            file = Math.Max(1, file * (200 - Swappiness) / 100);
        }
        if (file > 0) ShrinkInactive(LruList.InactiveFile, file, sc);
        if (anon > 0 && sc.NrReclaimed < sc.NrToReclaim) ShrinkInactive(LruList.InactiveAnon, anon, sc);
        ShrinkSlab(sc);
    }

    /// <summary>lru size &gt;&gt; priority, but at least SWAP_CLUSTER_MAX (or the whole list) so small lists are scanned.</summary>
    private long ScanCount(LruList l, int priority)
    {
        long size = Lru.Count(l);
        return Math.Min(size, Math.Max(size >> priority, SwapClusterMax));
    }

    /// <summary>shrink_active_list: move pages from the tail of an active list to the inactive list, clearing PG_referenced.</summary>
    private void ShrinkActive(LruList list, long nr, ScanControl sc)
    {
        lock (Lru.LruLock)
        {
            for (long i = 0; i < nr; i++)
            {
                PageFrame* page = Lru.TailLocked(list);
                if (page == null) break;
                if (page->Zone > sc.ReclaimIdx)
                {
                    Lru.RotateLocked(page);
                    continue;
                }
                PageFlagOps.Clear(page, PageFlags.Referenced);
                Lru.MoveLocked(page, active: false);
            }
        }
    }

    /// <summary>shrink_inactive_list + shrink_folio_list, one page at a time (see <see cref="IPageOwner"/> for the protocol).</summary>
    private void ShrinkInactive(LruList list, long nr, ScanControl sc)
    {
        VmItem scanItem = sc.IsKswapd ? VmItem.PgScanKswapd : VmItem.PgScanDirect;
        VmItem stealItem = sc.IsKswapd ? VmItem.PgStealKswapd : VmItem.PgStealDirect;
        for (long i = 0; i < nr && sc.NrReclaimed < sc.NrToReclaim; i++)
        {
            PageFrame* page;
            nint mapping;
            long index;
            lock (Lru.LruLock)
            {
                page = Lru.TailLocked(list);
                if (page == null) return;
                // Rotate first: if this page cannot be reclaimed now, the next look finds an older one.
                Lru.RotateLocked(page);
                if (page->Zone > sc.ReclaimIdx) continue;
                mapping = page->Mapping;
                index = page->Private;
            }
            sc.NrScanned++;
            _stat.Inc(scanItem);
            IPageOwner? owner = Owner(mapping);
            if (owner == null || !Monitor.TryEnter(owner.OwnerLock)) continue;
            try
            {
                if (!owner.StillOwns(page, index) || !page->Has(PageFlags.Lru) || Lru.ListOf(page) != list) continue;
                if (PageFlagOps.TestAndClear(page, PageFlags.Referenced))
                {
                    // folio_check_references: referenced since the last scan -> activate.
                    lock (Lru.LruLock) Lru.MoveLocked(page, active: true);
                    continue;
                }
                if (page->Has(PageFlags.SwapBacked))
                {
                    if (!sc.MaySwap)
                    {
                        sc.NrAnonSkipped++;
                        continue;
                    }
                    long slot = SwapAlloc();
                    if (slot < 0)
                    {
                        sc.NrAnonSkipped++;
                        lock (Lru.LruLock) Lru.MoveLocked(page, active: true);
                        continue;
                    }
                    owner.SwapOut(page, index, slot);
                    _stat.Inc(VmItem.PswpOut);
                    sc.NrSwappedOut++;
                }
                else
                {
                    if (page->Has(PageFlags.Dirty))
                    {
                        if (!sc.MayWriteback)
                        {
                            sc.NrDirtySkipped++;
                            continue;
                        }
                        _stat.Inc(VmItem.NrWriteback);
                        owner.Writeback(page, index);
                        _stat.Add(VmItem.NrWriteback, -1);
                        sc.NrWritten++;
                    }
                    owner.Evict(page, index);
                }
                Lru.Del(page);
                page->Mapping = 0;
                page->Private = 0;
                _pa.FreePages(page, 0);
                sc.NrReclaimed++;
                _stat.Inc(stealItem);
            }
            finally { Monitor.Exit(owner.OwnerLock); }
        }
    }

    /// <summary>shrink_slab / do_shrink_slab.</summary>
    private void ShrinkSlab(ScanControl sc)
    {
        var shrinkers = Volatile.Read(ref _shrinkers);
        foreach (var s in shrinkers)
        {
            if (!s.AllowedBy(sc.Gfp)) continue;
            var ctl = new ShrinkControl { Gfp = sc.Gfp };
            long freeable = s.CountObjects(ctl);
            if (freeable <= 0) continue;
            long delta = (freeable >> sc.Priority) * 4 / Math.Max(1, s.Seeks);
            long total = Math.Min(delta + Interlocked.Exchange(ref s.Deferred, 0), freeable * 2);
            long batch = s.BatchSize;
            long scanned = 0;
            while (total >= batch || (total > 0 && total >= freeable))
            {
                long n = Math.Min(batch, total);
                ctl.NrToScan = n;
                ctl.NrScanned = n;
                Interlocked.Increment(ref s.Calls);
                long freed = s.ScanObjects(ctl);
                if (freed == Shrinker.Stop) break;
                Interlocked.Add(ref s.Freed, freed);
                sc.SlabObjectsFreed += freed;
                total -= ctl.NrScanned;
                scanned += ctl.NrScanned;
            }
            if (total > 0) Interlocked.Add(ref s.Deferred, Math.Min(total, freeable));
            _stat.Add(VmItem.SlabsScanned, scanned);
            if (ctl.PagesFreed > 0)
            {
                sc.NrReclaimed += ctl.PagesFreed;
                _stat.Add(sc.IsKswapd ? VmItem.PgStealKswapd : VmItem.PgStealDirect, ctl.PagesFreed);
            }
        }
    }

    // =====================================================================================================
    // Direct compaction
    // =====================================================================================================

    /// <summary>
    /// try_to_compact_pages, simplified but real: in each zone that passes compaction_suitable (free pages above the
    /// watermark plus compact_gap = 2 &lt;&lt; order), find an aligned 2^order range whose pages are all free or
    /// movable LRU pages with an owner, migrate those pages out (copy the frame, repoint the owner's mapping, free
    /// the old frame), and retry the allocation.
    /// </summary>
    private PageFrame* Compact(Gfp gfp, int order, ZoneType highest, AllocFlags flags, PageAllocator.RetryAllocation retry)
    {
        bool tried = false;
        for (int zi = (int)highest; zi >= 0; zi--)
        {
            Zone? z = _pa.GetZone((ZoneType)zi);
            if (z == null) continue;
            long mark = (order > CostlyOrder ? z.WmarkLow : z.WmarkMin) + (2L << order);
            if (z.FreePages + _pa.PcpPages(z) < mark) continue;
            if (!tried)
            {
                tried = true;
                _stat.Inc(VmItem.CompactStall);
                _pa.DrainAllPages();
            }
            if (CompactZone(z, order, highest))
            {
                _pa.DrainAllPages();
                PageFrame* page = retry(flags);
                if (page != null)
                {
                    _stat.Inc(VmItem.CompactSuccess);
                    return page;
                }
            }
        }
        if (tried) _stat.Inc(VmItem.CompactFail);
        return null;
    }

    private bool CompactZone(Zone z, int order, ZoneType highest)
    {
        long size = 1L << order;
        long first = (z.StartPfn + size - 1) & ~(size - 1);
        long bestStart = -1, bestMovable = long.MaxValue;
        for (long start = first; start + size <= z.EndPfn; start += size)
        {
            long movable = 0;
            bool ok = true;
            for (long pfn = start; pfn < start + size;)
            {
                PageFrame* p = _map.PfnToPage(pfn);
                _stat.Inc(VmItem.CompactMigrateScanned);
                if (p->Has(PageFlags.Buddy)) { pfn += 1L << p->Order; continue; }
                if (p->Has(PageFlags.AllocHead) && p->Order == 0 && p->Has(PageFlags.Lru) && Owner(p->Mapping) != null)
                {
                    movable++;
                    pfn++;
                    continue;
                }
                ok = false;
                break;
            }
            if (ok && movable > 0 && movable < bestMovable)
            {
                bestMovable = movable;
                bestStart = start;
            }
        }
        if (bestStart < 0) return false;

        var stash = new List<nint>();
        bool done = true;
        Gfp targetGfp = (Gfp.HighUserMovable & ~(Gfp.Reclaim | Gfp.HighMem)) | Gfp.NoWarn;
        try
        {
            for (long pfn = bestStart; pfn < bestStart + size; pfn++)
            {
                PageFrame* p = _map.PfnToPage(pfn);
                if (!p->Has(PageFlags.Lru) || !p->Has(PageFlags.AllocHead)) continue;
                PageFrame* target = null;
                while (true)
                {
                    _stat.Inc(VmItem.CompactFreeScanned);
                    target = _pa.GetPageFromFreelist(targetGfp, 0, AllocFlags.WmarkMin, highest, MigrateType.Movable);
                    if (target == null) break;
                    long t = _map.PageToPfn(target);
                    if (t < bestStart || t >= bestStart + size) break;
                    stash.Add((nint)target);
                    if (stash.Count > size) { target = null; break; }
                }
                if (target == null) { done = false; break; }
                if (!MigratePage(p, target)) _pa.FreePages(target, 0);
            }
        }
        finally
        {
            foreach (nint t in stash) _pa.FreePages((PageFrame*)t, 0);
        }
        return done;
    }

    /// <summary>migrate_pages for one order-0 LRU page: copy, repoint the owner, swap LRU places, free the old frame.</summary>
    internal bool MigratePage(PageFrame* page, PageFrame* target)
    {
        nint mapping = page->Mapping;
        long index = page->Private;
        IPageOwner? owner = Owner(mapping);
        if (owner == null || !Monitor.TryEnter(owner.OwnerLock)) return false;
        try
        {
            if (!owner.StillOwns(page, index) || !page->Has(PageFlags.Lru)) return false;
            using (var src = LocalPageMap.Of(_m, page))
            using (var dst = LocalPageMap.Of(_m, target))
                src.Bytes.CopyTo(dst.Bytes);
            target->Mapping = mapping;
            target->Private = (nint)index;
            target->MapCount = page->MapCount;
            lock (Lru.LruLock) Lru.ReplaceLocked(page, target);
            owner.Migrated(page, target, index);
            page->Mapping = 0;
            page->Private = 0;
            page->MapCount = -1;
            _pa.FreePages(page, 0);
            return true;
        }
        finally { Monitor.Exit(owner.OwnerLock); }
    }
}
