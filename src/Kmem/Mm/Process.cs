using Kmem.HighMem;
using System.Text;
using Kmem.Diagnostics;
using Kmem.Physical;
using Kmem.Reclaim;

namespace Kmem.Mm;

/// <summary>A virtual memory area: [Start, End), anonymous and private (MAP_PRIVATE|MAP_ANONYMOUS, PROT_READ|PROT_WRITE).</summary>
public sealed record Vma(ulong Start, ulong End, string Name)
{
    public long Pages => (long)((End - Start) >> ArchProfile.PageShift);
}

/// <summary>A user-memory error: what a system call or fault would return or signal.</summary>
public sealed class MmException : KmemException
{
    /// <summary>ENOMEM, EINVAL, SIGSEGV or SIGKILL.</summary>
    public string Error { get; }
    public MmException(string error, string message) : base(message) => Error = error;
}

/// <summary>Memory counters of a process at one moment (what /proc/PID/status and the OOM report print).</summary>
public readonly record struct MmSnapshot(long TotalVmPages, long RssAnon, long RssFile, long SwapPages, long PageTablePages);

/// <summary>
/// A process with an address space (task_struct + mm_struct), for contrast with kernel memory: mmap/munmap/brk only
/// reserve address space (and Committed_AS); a frame is allocated on the first touch of each page (demand paging,
/// GFP_HIGHUSER_MOVABLE, zeroed); pages live on the anon LRU and can be swapped out by reclaim and faulted back.
/// </summary>
/// <remarks>
/// <para>Page tables: a two-level structure whose leaf tables are real kernel pages (GFP_KERNEL | __GFP_ZERO |
/// __GFP_ACCOUNT, accounted as PageTables), 512 eight-byte PTEs each; the upper level is a managed dictionary.
/// PTE encoding: 0 = none; (pfn &lt;&lt; 12) | 1 = present; (slot &lt;&lt; 12) | 2 = swap entry.</para>
/// <para>Locking: <see cref="OwnerLock"/> (mmap_lock + page-table lock) protects the VMAs, the page tables and the
/// counters. It is never held while allocating: a fault looks, drops the lock, allocates, retakes it and re-checks
/// (as Linux's fault path re-checks the PTE under the PTL). Reclaim takes it with TryEnter.</para>
/// <para>Addresses: mmap areas are placed bottom-up from 0x7f0000000000 (x86_32: 0x40000000) and holes are not
/// reused; the heap (brk) starts at 0x555555560000 (x86_32: 0x08050000).</para>
/// </remarks>
public sealed unsafe class Process : IPageOwner
{
    private const ulong PtePresent = 1, PteSwap = 2;
    private const int PtesPerTable = 512;

    private readonly Reclaimer _r;
    private readonly Machine _m;
    private readonly object _lock = new();
    private readonly List<Vma> _vmas = new();
    private readonly Dictionary<long, nint> _tables = new();
    private ulong _mmapNext;
    private readonly ulong _brkStart;
    private ulong _brk;
    private long _rss, _swap, _totalVm, _committed, _hwm, _peakVm;

    public int Pid { get; }
    public string Comm { get; }
    public int Uid { get; }
    /// <summary>/proc/PID/oom_score_adj (-1000..1000).</summary>
    public int OomScoreAdj { get; set; }
    public int OwnerId { get; }
    public object OwnerLock => _lock;
    public bool IsKilled { get; private set; }
    public bool HasExited { get; private set; }

    internal Process(Reclaimer r, Machine m, int pid, string comm, int uid, int oomScoreAdj)
    {
        _r = r;
        _m = m;
        Pid = pid;
        Comm = comm;
        Uid = uid;
        OomScoreAdj = Math.Clamp(oomScoreAdj, Reclaimer.OomScoreAdjMin, Reclaimer.OomScoreAdjMax);
        bool is32 = m.Profile.Arch == Arch.X86_32;
        _mmapNext = is32 ? 0x40000000UL : 0x7f0000000000UL;
        _brkStart = _brk = is32 ? 0x08050000UL : 0x555555560000UL;
        OwnerId = r.RegisterOwner(this);
    }

    public long RssPages => Interlocked.Read(ref _rss);
    public long SwapPages => Interlocked.Read(ref _swap);
    public long PageTablePages { get { lock (_lock) return _tables.Count; } }
    public long TotalVmPages => Interlocked.Read(ref _totalVm);
    public IReadOnlyList<Vma> Vmas { get { lock (_lock) return _vmas.ToList(); } }

    public MmSnapshot Snapshot()
    {
        lock (_lock) return new MmSnapshot(_totalVm, _rss, 0, _swap, _tables.Count);
    }

    /// <summary>The gfp of a user page fault: GFP_HIGHUSER_MOVABLE (without __GFP_HIGHMEM where the profile has HIGHMEM; see <see cref="Reclaimer"/>, 7).</summary>
    public Gfp FaultGfp => Gfp.HighUserMovable;

    // =====================================================================================================
    // System calls
    // =====================================================================================================

    /// <summary>mmap(NULL, length, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS): address space only, no frames.</summary>
    public ulong Mmap(long length, string name = "[anon]")
    {
        long pages = PagesOf(length);
        lock (_lock)
        {
            CheckAlive();
            Account(pages);
            ulong start = _mmapNext;
            _mmapNext += (ulong)pages << ArchProfile.PageShift;
            _mmapNext += ArchProfile.PageSize; // a guard gap between areas
            _vmas.Add(new Vma(start, start + ((ulong)pages << ArchProfile.PageShift), name));
            _vmas.Sort((a, b) => a.Start.CompareTo(b.Start));
            _totalVm += pages;
            if (_totalVm > _peakVm) _peakVm = _totalVm;
            return start;
        }
    }

    /// <summary>munmap: frees the frames and swap slots of the range and its commit charge.</summary>
    public void Munmap(ulong addr, long length)
    {
        if ((addr & (ArchProfile.PageSize - 1)) != 0) throw new MmException("EINVAL", $"munmap: {addr:x} is not page aligned");
        ulong end = addr + ((ulong)PagesOf(length) << ArchProfile.PageShift);
        lock (_lock)
        {
            CheckAlive();
            for (int i = _vmas.Count - 1; i >= 0; i--)
            {
                var v = _vmas[i];
                if (v.End <= addr || v.Start >= end) continue;
                ulong s = Math.Max(v.Start, addr), e = Math.Min(v.End, end);
                ZapRange(s, e);
                _vmas.RemoveAt(i);
                if (v.Start < s) _vmas.Add(v with { End = s });
                if (e < v.End) _vmas.Add(v with { Start = e });
                long pages = (long)((e - s) >> ArchProfile.PageShift);
                _totalVm -= pages;
                Unaccount(pages);
            }
            _vmas.Sort((a, b) => a.Start.CompareTo(b.Start));
        }
        _r.NotifyFreed();
    }

    /// <summary>brk(newBrk): grow or shrink the heap; returns the new break (the old one when the request fails).</summary>
    public ulong Brk(ulong newBrk)
    {
        lock (_lock)
        {
            CheckAlive();
            if (newBrk < _brkStart) return _brk;
            ulong oldEnd = PageAlign(_brk), newEnd = PageAlign(newBrk);
            if (newEnd > oldEnd)
            {
                long pages = (long)((newEnd - oldEnd) >> ArchProfile.PageShift);
                try { Account(pages); }
                catch (MmException) { return _brk; }
                int hi = _vmas.FindIndex(v => v.Name == "[heap]");
                if (hi >= 0) _vmas[hi] = _vmas[hi] with { End = newEnd };
                else _vmas.Add(new Vma(_brkStart, newEnd, "[heap]"));
                _vmas.Sort((a, b) => a.Start.CompareTo(b.Start));
                _totalVm += pages;
                if (_totalVm > _peakVm) _peakVm = _totalVm;
            }
            else if (newEnd < oldEnd)
            {
                ZapRange(newEnd, oldEnd);
                int hi = _vmas.FindIndex(v => v.Name == "[heap]");
                long pages = (long)((oldEnd - newEnd) >> ArchProfile.PageShift);
                if (newEnd == _brkStart) _vmas.RemoveAt(hi);
                else _vmas[hi] = _vmas[hi] with { End = newEnd };
                _totalVm -= pages;
                Unaccount(pages);
            }
            _brk = newBrk;
            return _brk;
        }
    }

    /// <summary>The current program break.</summary>
    public ulong CurrentBrk { get { lock (_lock) return _brk; } }

    /// <summary>Touch one byte (a load or a store): faults the page in if needed.</summary>
    public void Touch(ulong addr, bool write = true) => GetPage((long)(addr >> ArchProfile.PageShift), write);

    /// <summary>Touch every page of [addr, addr+length).</summary>
    public void TouchRange(ulong addr, long length, bool write = true)
    {
        for (ulong a = addr & ~(ulong)(ArchProfile.PageSize - 1); a < addr + (ulong)length; a += ArchProfile.PageSize) Touch(a, write);
    }

    /// <summary>Store bytes into user memory (copy_to_user from the process's point of view).</summary>
    public void Write(ulong addr, ReadOnlySpan<byte> data)
    {
        while (data.Length > 0)
        {
            int off = (int)(addr & (ArchProfile.PageSize - 1));
            int n = Math.Min(data.Length, ArchProfile.PageSize - off);
            lock (_lock)
            {
                using var map = LocalPageMap.Of(_m, GetPageLocked((long)(addr >> ArchProfile.PageShift), true));
                data[..n].CopyTo(map.Bytes.Slice(off, n));
            }
            data = data[n..];
            addr += (ulong)n;
        }
    }

    /// <summary>Load bytes from user memory.</summary>
    public void Read(ulong addr, Span<byte> dest)
    {
        while (dest.Length > 0)
        {
            int off = (int)(addr & (ArchProfile.PageSize - 1));
            int n = Math.Min(dest.Length, ArchProfile.PageSize - off);
            lock (_lock)
            {
                using var map = LocalPageMap.Of(_m, GetPageLocked((long)(addr >> ArchProfile.PageShift), false));
                map.Bytes.Slice(off, n).CopyTo(dest[..n]);
            }
            dest = dest[n..];
            addr += (ulong)n;
        }
    }

    /// <summary>exit(): tear down the address space and leave the process table.</summary>
    public void Exit()
    {
        lock (_lock)
        {
            if (HasExited) return;
            TearDown();
            HasExited = true;
        }
        _r.RemoveProcess(this);
        _r.UnregisterOwner(OwnerId);
        _r.NotifyFreed();
    }

    /// <summary>SIGKILL from the OOM killer: the memory is reaped at once; the process's next access gets SIGKILL.</summary>
    internal void Kill()
    {
        lock (_lock)
        {
            IsKilled = true;
            TearDown();
        }
        _r.RemoveProcess(this);
        _r.NotifyFreed();
    }

    // =====================================================================================================
    // Faults
    // =====================================================================================================

    /// <summary>Fault in (if needed); holds the lock only while not allocating.</summary>
    private void GetPage(long vpn, bool write)
    {
        lock (_lock) GetPageLocked(vpn, write);
    }

    /// <summary>
    /// Called with the lock held; may drop and retake it around allocations (the caller's lock scope still balances,
    /// because Monitor is re-entrant and we restore the same depth).
    /// </summary>
    private PageFrame* GetPageLocked(long vpn, bool write)
    {
        // might_fault(): touching user memory may sleep (a fault allocates with GFP_HIGHUSER_MOVABLE).
        Context.MightSleep(_m);
        while (true)
        {
            CheckAlive();
            ulong addr = (ulong)vpn << ArchProfile.PageShift;
            if (FindVma(addr) == null)
                throw new MmException("SIGSEGV", $"{Comm}[{Pid}]: segfault at {addr:x} (no vma)");
            ulong* pte = PteOf(vpn);
            if (pte != null && (*pte & PtePresent) != 0)
            {
                PageFrame* page = _m.MemMap.PfnToPage((long)(*pte >> 12));
                _r.Lru.MarkPageAccessed(page);
                return page;
            }
            // A fault: allocate outside the lock, then re-check.
            bool needTable = pte == null;
            ulong entry = pte == null ? 0 : *pte;
            _m.Stat.Inc(VmItem.PgFault);
            Monitor.Exit(_lock);
            PageFrame* table = null, page0 = null;
            try
            {
                if (needTable) table = _m.Pages.AllocPages(Gfp.KernelAccount | Gfp.Zero, 0);
                if (table != null || !needTable)
                    page0 = _m.Pages.AllocPages(FaultGfp | ((entry & PteSwap) != 0 ? 0 : Gfp.Zero), 0);
            }
            finally { Monitor.Enter(_lock); }
            if ((needTable && table == null) || page0 == null)
            {
                if (table != null) _m.Pages.FreePages(table, 0);
                if (page0 != null) _m.Pages.FreePages(page0, 0);
                CheckAlive();
                // VM_FAULT_OOM: pagefault_out_of_memory; kmem reports it to the caller.
                throw new MmException("ENOMEM", $"{Comm}[{Pid}]: page fault at {addr:x}: out of memory");
            }
            if (IsKilled)
            {
                if (table != null) _m.Pages.FreePages(table, 0);
                _m.Pages.FreePages(page0, 0);
                CheckAlive();
            }
            if (table != null)
            {
                if (PteOf(vpn) == null)
                {
                    _tables[vpn / PtesPerTable] = (nint)table;
                    _m.Stat.Inc(VmItem.NrPageTablePages);
                }
                else _m.Pages.FreePages(table, 0);
            }
            pte = PteOf(vpn);
            if (FindVma(addr) == null || *pte != entry)
            {
                // Raced with munmap, another fault or a swap-out: start over.
                _m.Pages.FreePages(page0, 0);
                continue;
            }
            if ((entry & PteSwap) != 0)
            {
                long slot = (long)(entry >> 12);
                using (var map = LocalPageMap.Of(_m, page0)) _r.Swap!.Slot(slot).CopyTo(map.Bytes);
                _r.SwapFree(slot);
                _swap--;
                _m.Stat.Inc(VmItem.PswpIn);
                _m.Stat.Inc(VmItem.PgMajFault);
            }
            page0->Mapping = OwnerId;
            page0->Private = (nint)vpn;
            page0->MapCount = 0;
            *pte = ((ulong)_m.MemMap.PageToPfn(page0) << 12) | PtePresent;
            if (++_rss > _hwm) _hwm = _rss;
            _r.Lru.Add(page0, anon: true, active: false);
            return page0;
        }
    }


    private ulong* PteOf(long vpn)
    {
        if (!_tables.TryGetValue(vpn / PtesPerTable, out nint t)) return null;
        return (ulong*)_m.MemMap.PageAddress((PageFrame*)t) + vpn % PtesPerTable;
    }

    private Vma? FindVma(ulong addr)
    {
        foreach (var v in _vmas)
            if (addr >= v.Start && addr < v.End) return v;
        return null;
    }

    /// <summary>zap_page_range: free frames and swap slots of [start, end). Lock held.</summary>
    private void ZapRange(ulong start, ulong end)
    {
        for (long vpn = (long)(start >> 12); vpn < (long)(end >> 12); vpn++)
        {
            ulong* pte = PteOf(vpn);
            if (pte == null)
            {
                vpn = (vpn / PtesPerTable + 1) * PtesPerTable - 1;
                continue;
            }
            ZapPte(pte);
        }
    }

    private void ZapPte(ulong* pte)
    {
        ulong e = *pte;
        if ((e & PtePresent) != 0)
        {
            PageFrame* page = _m.MemMap.PfnToPage((long)(e >> 12));
            _r.Lru.Del(page);
            page->Mapping = 0;
            page->Private = 0;
            page->MapCount = -1;
            _m.Pages.FreePages(page, 0);
            _rss--;
        }
        else if ((e & PteSwap) != 0)
        {
            _r.SwapFree((long)(e >> 12));
            _swap--;
        }
        *pte = 0;
    }

    private void TearDown()
    {
        foreach (var (_, t) in _tables)
        {
            ulong* ptes = (ulong*)_m.MemMap.PageAddress((PageFrame*)t);
            for (int i = 0; i < PtesPerTable; i++)
                if (ptes[i] != 0) ZapPte(ptes + i);
            _m.Pages.FreePages((PageFrame*)t, 0);
            _m.Stat.Add(VmItem.NrPageTablePages, -1);
        }
        _tables.Clear();
        _vmas.Clear();
        _totalVm = 0;
        Unaccount(_committed);
    }

    private void CheckAlive()
    {
        if (IsKilled) throw new MmException("SIGKILL", $"{Comm}[{Pid}]: killed by the OOM killer");
        if (HasExited) throw new MmException("ESRCH", $"{Comm}[{Pid}]: has exited");
    }

    // =====================================================================================================
    // Overcommit (vm.overcommit_memory = 0, OVERCOMMIT_GUESS)
    // =====================================================================================================

    /// <summary>__vm_enough_memory in heuristic mode: refuse only a single request larger than RAM + swap.</summary>
    private void Account(long pages)
    {
        long limit = _m.TotalRamPages + _m.SwapTotalPages;
        if (pages > limit)
            throw new MmException("ENOMEM", $"{Comm}[{Pid}]: mmap of {pages * 4} kB: not enough memory (heuristic overcommit limit {limit * 4} kB)");
        _committed += pages;
        _r.AddCommitted(pages);
    }

    private void Unaccount(long pages)
    {
        _committed -= pages;
        _r.AddCommitted(-pages);
    }

    private static long PagesOf(long length)
    {
        if (length <= 0) throw new MmException("EINVAL", $"length {length} is not positive");
        return (length + ArchProfile.PageSize - 1) >> ArchProfile.PageShift;
    }

    private static ulong PageAlign(ulong a) => (a + ArchProfile.PageSize - 1) & ~(ulong)(ArchProfile.PageSize - 1);

    // =====================================================================================================
    // IPageOwner (called by reclaim and compaction with the lock held)
    // =====================================================================================================

    public bool StillOwns(PageFrame* page, long index)
    {
        if (IsKilled || HasExited) return false;
        ulong* pte = PteOf(index);
        return pte != null && (*pte & PtePresent) != 0 && (long)(*pte >> 12) == _m.MemMap.PageToPfn(page);
    }

    public void SwapOut(PageFrame* page, long index, long slot)
    {
        using (var map = LocalPageMap.Of(_m, page)) map.Bytes.CopyTo(_r.Swap!.Slot(slot));
        *PteOf(index) = ((ulong)slot << 12) | PteSwap;
        _rss--;
        _swap++;
    }

    public void Writeback(PageFrame* page, long index) => throw new InvalidOperationException("anonymous pages are not written back");
    public void Evict(PageFrame* page, long index) => throw new InvalidOperationException("anonymous pages are swapped, not evicted");

    public void Migrated(PageFrame* from, PageFrame* to, long index) =>
        *PteOf(index) = ((ulong)_m.MemMap.PageToPfn(to) << 12) | PtePresent;

    /// <summary>/proc/PID/status (the memory lines).</summary>
    public string Status()
    {
        var s = Snapshot();
        long hwm, peak;
        lock (_lock) (hwm, peak) = (_hwm, _peakVm);
        var sb = new StringBuilder();
        sb.Append($"Name:\t{Comm}\n");
        sb.Append($"State:\t{(IsKilled ? "X (dead)" : "S (sleeping)")}\n");
        sb.Append($"Tgid:\t{Pid}\nPid:\t{Pid}\nUid:\t{Uid}\t{Uid}\t{Uid}\t{Uid}\n");
        sb.Append($"VmPeak:\t{peak * 4,8} kB\n");
        sb.Append($"VmSize:\t{s.TotalVmPages * 4,8} kB\n");
        sb.Append($"VmLck:\t{0,8} kB\nVmPin:\t{0,8} kB\n");
        sb.Append($"VmHWM:\t{hwm * 4,8} kB\n");
        sb.Append($"VmRSS:\t{(s.RssAnon + s.RssFile) * 4,8} kB\n");
        sb.Append($"RssAnon:\t{s.RssAnon * 4,8} kB\nRssFile:\t{s.RssFile * 4,8} kB\nRssShmem:\t{0,8} kB\n");
        sb.Append($"VmData:\t{s.TotalVmPages * 4,8} kB\n");
        sb.Append($"VmPTE:\t{s.PageTablePages * 4,8} kB\n");
        sb.Append($"VmSwap:\t{s.SwapPages * 4,8} kB\n");
        return sb.ToString();
    }

    public override string ToString() => $"{Comm}[{Pid}]";
}
