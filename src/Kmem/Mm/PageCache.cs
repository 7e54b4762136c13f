using Kmem.HighMem;
using System.Runtime.InteropServices;
using Kmem.Diagnostics;
using Kmem.Physical;
using Kmem.Reclaim;

namespace Kmem.Mm;

/// <summary>
/// The page cache: files whose pages are cached in RAM (<see cref="CachedFile"/>), on the file LRU lists. Clean pages
/// can be dropped at any time; dirty pages must be written back to the file's backing store first.
/// </summary>
public sealed class PageCache
{
    private readonly Machine _m;
    private readonly Reclaimer _r;
    private readonly Lock _lock = new();
    private readonly List<CachedFile> _files = new();

    internal PageCache(Machine m, Reclaimer r)
    {
        _m = m;
        _r = r;
    }

    /// <summary>Create a file of <paramref name="sizePages"/> pages on a "disk" (native memory, zero-filled).</summary>
    public CachedFile CreateFile(string name, long sizePages)
    {
        var f = new CachedFile(_m, _r, this, name, sizePages);
        lock (_lock) _files.Add(f);
        return f;
    }

    public IReadOnlyList<CachedFile> Files { get { lock (_lock) return _files.ToList(); } }

    internal void Remove(CachedFile f)
    {
        lock (_lock) _files.Remove(f);
    }

    /// <summary>echo 1 &gt; /proc/sys/vm/drop_caches: drop every clean cached page. Returns pages dropped.</summary>
    public long DropCaches()
    {
        long n = 0;
        foreach (var f in Files) n += f.DropClean();
        _r.NotifyFreed();
        return n;
    }

    /// <summary>sync: write back every dirty page.</summary>
    public long Sync()
    {
        long n = 0;
        foreach (var f in Files) n += f.Fsync();
        return n;
    }

    internal void DropAll()
    {
        foreach (var f in Files) f.Delete();
    }
}

/// <summary>
/// A file's address_space: page index → cached frame, plus the backing store ("disk") the pages are read from and
/// written back to. Page-cache pages are GFP_HIGHUSER_MOVABLE allocations (mapping_gfp_mask), reclaimable and
/// movable; kmem's file pages have no user mappings.
/// </summary>
/// <remarks>
/// States per page: not cached (slot -1); cached clean (Lru, !Dirty); cached dirty (Lru, Dirty, counted in nr_dirty).
/// Locking: <see cref="OwnerLock"/> (the i_pages lock) protects the slots; never held while allocating.
/// </remarks>
public sealed unsafe class CachedFile : IPageOwner, IDisposable
{
    private readonly Machine _m;
    private readonly Reclaimer _r;
    private readonly PageCache _cache;
    private readonly object _lock = new();
    private readonly int[] _slots;
    private byte* _disk;
    private long _cached;

    public string Name { get; }
    public long SizePages { get; }
    public int OwnerId { get; }
    public object OwnerLock => _lock;
    public long CachedPages => Interlocked.Read(ref _cached);
    /// <summary>Pages read from the disk (cache misses).</summary>
    public long Reads { get; private set; }
    /// <summary>Pages written back to the disk.</summary>
    public long Writebacks { get; private set; }
    public bool IsDeleted { get; private set; }

    internal CachedFile(Machine m, Reclaimer r, PageCache cache, string name, long sizePages)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(sizePages, 1);
        _m = m;
        _r = r;
        _cache = cache;
        Name = name;
        SizePages = sizePages;
        _slots = new int[sizePages];
        Array.Fill(_slots, PageFrame.None);
        _disk = (byte*)NativeMemory.AllocZeroed((nuint)sizePages * ArchProfile.PageSize);
        OwnerId = r.RegisterOwner(this);
    }

    /// <summary>mapping_gfp_mask: GFP_HIGHUSER_MOVABLE (HIGHMEM frames are reached through kmap_local when copied).</summary>
    public Gfp MappingGfp => Gfp.HighUserMovable;

    /// <summary>read(): copy page <paramref name="index"/> into <paramref name="dest"/>, reading it into the cache on a miss.</summary>
    /// <remarks>The optional gfp is the allocation context of the caller (a filesystem path passes GFP_NOFS); null = <see cref="MappingGfp"/>.</remarks>
    public void Read(long index, Span<byte> dest, Gfp? gfp = null)
    {
        lock (_lock)
        {
            using var map = LocalPageMap.Of(_m, GetPageLocked(index, gfp, write: false));
            map.Bytes[..Math.Min(dest.Length, ArchProfile.PageSize)].CopyTo(dest);
        }
    }

    /// <summary>write(): copy <paramref name="data"/> into page <paramref name="index"/> and mark it dirty.</summary>
    public void Write(long index, ReadOnlySpan<byte> data, Gfp? gfp = null)
    {
        lock (_lock)
        {
            using var map = LocalPageMap.Of(_m, GetPageLocked(index, gfp, write: true));
            data[..Math.Min(data.Length, ArchProfile.PageSize)].CopyTo(map.Bytes);
        }
    }

    /// <summary>Is page <paramref name="index"/> in the cache?</summary>
    public bool IsCached(long index)
    {
        lock (_lock) return _slots[index] != PageFrame.None;
    }

    /// <summary>Is page <paramref name="index"/> cached and dirty?</summary>
    public bool IsDirty(long index)
    {
        lock (_lock) return _slots[index] != PageFrame.None && _m.MemMap.PfnToPage(_slots[index])->Has(PageFlags.Dirty);
    }

    private PageFrame* GetPageLocked(long index, Gfp? gfp, bool write)
    {
        if ((ulong)index >= (ulong)SizePages) throw new ArgumentOutOfRangeException(nameof(index), $"{Name}: page {index} beyond EOF ({SizePages} pages)");
        Context.MightSleep(_m); // read/write of a file may sleep (page cache allocation, I/O)
        while (true)
        {
            if (IsDeleted) throw new ObjectDisposedException(Name);
            int pfn = _slots[index];
            if (pfn != PageFrame.None)
            {
                PageFrame* page = _m.MemMap.PfnToPage(pfn);
                _r.Lru.MarkPageAccessed(page);
                if (write && !PageFlagOps.TestAndSet(page, PageFlags.Dirty)) _m.Stat.Inc(VmItem.NrDirty);
                return page;
            }
            Monitor.Exit(_lock);
            PageFrame* fresh;
            try { fresh = _m.Pages.AllocPages(gfp ?? MappingGfp, 0); }
            finally { Monitor.Enter(_lock); }
            if (fresh == null) throw new MmException("ENOMEM", $"{Name}: page cache allocation for page {index} failed");
            if (_slots[index] != PageFrame.None || IsDeleted)
            {
                _m.Pages.FreePages(fresh, 0);
                continue;
            }
            using (var map = LocalPageMap.Of(_m, fresh))
                new ReadOnlySpan<byte>(_disk + index * ArchProfile.PageSize, ArchProfile.PageSize).CopyTo(map.Bytes);
            Reads++;
            fresh->Mapping = OwnerId;
            fresh->Private = (nint)index;
            _slots[index] = (int)_m.MemMap.PageToPfn(fresh);
            Interlocked.Increment(ref _cached);
            _r.Lru.Add(fresh, anon: false, active: false);
        }
    }


    /// <summary>fsync: write back every dirty page. Returns pages written.</summary>
    public long Fsync()
    {
        long n = 0;
        lock (_lock)
        {
            for (long i = 0; i < SizePages; i++)
            {
                if (_slots[i] == PageFrame.None) continue;
                PageFrame* page = _m.MemMap.PfnToPage(_slots[i]);
                if (!page->Has(PageFlags.Dirty)) continue;
                Writeback(page, i);
                n++;
            }
        }
        return n;
    }

    /// <summary>invalidate_mapping_pages: drop the clean cached pages. Returns pages dropped.</summary>
    public long DropClean()
    {
        long n = 0;
        lock (_lock)
        {
            for (long i = 0; i < SizePages; i++)
            {
                if (_slots[i] == PageFrame.None) continue;
                PageFrame* page = _m.MemMap.PfnToPage(_slots[i]);
                if (page->Has(PageFlags.Dirty)) continue;
                Release(page, i);
                n++;
            }
        }
        return n;
    }

    /// <summary>unlink: truncate the whole cache (dirty data is discarded) and free the disk.</summary>
    public void Delete()
    {
        lock (_lock)
        {
            if (IsDeleted) return;
            for (long i = 0; i < SizePages; i++)
            {
                if (_slots[i] == PageFrame.None) continue;
                PageFrame* page = _m.MemMap.PfnToPage(_slots[i]);
                if (PageFlagOps.TestAndClear(page, PageFlags.Dirty)) _m.Stat.Add(VmItem.NrDirty, -1);
                Release(page, i);
            }
            IsDeleted = true;
            NativeMemory.Free(_disk);
            _disk = null;
        }
        _r.UnregisterOwner(OwnerId);
        _cache.Remove(this);
        _r.NotifyFreed();
    }

    public void Dispose() => Delete();

    private void Release(PageFrame* page, long index)
    {
        _slots[index] = PageFrame.None;
        Interlocked.Decrement(ref _cached);
        _r.Lru.Del(page);
        page->Mapping = 0;
        page->Private = 0;
        _m.Pages.FreePages(page, 0);
    }

    // ---- IPageOwner (lock held) ----

    public bool StillOwns(PageFrame* page, long index) =>
        !IsDeleted && (ulong)index < (ulong)SizePages && _slots[index] == (int)_m.MemMap.PageToPfn(page);

    public void SwapOut(PageFrame* page, long index, long slot) => throw new InvalidOperationException("file pages are written back, not swapped");

    public void Writeback(PageFrame* page, long index)
    {
        using (var map = LocalPageMap.Of(_m, page))
            map.Bytes.CopyTo(new Span<byte>(_disk + index * ArchProfile.PageSize, ArchProfile.PageSize));
        if (PageFlagOps.TestAndClear(page, PageFlags.Dirty)) _m.Stat.Add(VmItem.NrDirty, -1);
        Writebacks++;
    }

    public void Evict(PageFrame* page, long index)
    {
        _slots[index] = PageFrame.None;
        Interlocked.Decrement(ref _cached);
    }

    public void Migrated(PageFrame* from, PageFrame* to, long index) => _slots[index] = (int)_m.MemMap.PageToPfn(to);
}
