using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text;
using Kmem.Diagnostics;
using Kmem.PageAlloc;
using Kmem.Physical;

namespace Kmem.Vmalloc;

/// <summary>
/// vmalloc: virtually contiguous kernel memory from scattered order-0 frames, mapped for real into the machine's
/// vmalloc area (mm/vmalloc.c).
/// </summary>
/// <remarks>
/// <para><b>1. Concepts.</b> The vmalloc area [VMALLOC_START, VMALLOC_END) is a bounded range of kernel virtual
/// addresses (x86_32: high_memory + 8 MiB up to 0xff7fe000, a few hundred MiB at most; x86_64: 16 GiB by default).
/// A <em>vmap area</em> is a range of it handed to one user: vmalloc() fills it with freshly allocated order-0
/// frames (VM_ALLOC), vmap() with frames the caller owns (VM_MAP). Every area is followed by one unmapped guard page
/// (part of the area's size, as in Linux) unless VM_NO_GUARD, so running off the end faults. Frames are mapped
/// with <see cref="PhysicalMemory.MapFrames"/>: the area's memory is the frames' memory, a byte written through the
/// vmalloc pointer reads back through the frame's direct map or kmap. Runs of consecutive PFNs are mapped with one
/// mmap. On x86_32, frames come from ZONE_HIGHMEM first (__GFP_HIGHMEM is added unless DMA/DMA32 was asked for).</para>
/// <para><b>2. Structures.</b> Area nodes (<see cref="VmapArea"/>, 64 bytes, native pool) sit in exactly one of:
/// the <em>free tree</em> (free ranges, address-ordered treap augmented with subtree_max_size; the lowest-address
/// fit with alignment is find_vmap_lowest_match; adjacent free ranges are always merged), the <em>busy tree</em>
/// (allocated areas, by address), the <em>lazy list</em> (freed, unmapped areas whose address range is not yet
/// reusable) or the pool's free list. A "page table" <c>_pte</c> holds pfn+1 for every mapped page of the area
/// (0 = not mapped): vmalloc_to_page reads it, as Linux walks the page tables.</para>
/// <para><b>3. Invariants.</b> (a) free ∪ busy ∪ lazy ∪ unmapping ranges tile the area exactly, without overlap;
/// no two free ranges touch. (b) A page of the area is mapped iff its PTE is nonzero iff it belongs to a busy area
/// (minus its guard page). (c) <b>The stale-mapping rule:</b> a frame is never reachable through a vmalloc address
/// once the page allocator can hand it out again. vfree therefore unmaps the area (one mmap(PROT_NONE) over the
/// whole range) and clears its PTEs <em>before</em> the frames go back to the page allocator; only the reuse of the
/// <em>address range</em> is lazy. This is Linux's order too: vunmap_range_noflush clears the page tables at vfree;
/// what Linux defers and batches (lazy_max_pages, purge_vmap_area_lazy) is the TLB flush and the return of the
/// range to the free tree. kmem has no TLB to flush, so the purge batches the range bookkeeping only: lazily freed
/// ranges are merged into the free tree together, once more than lazy_max_pages = fls(nr_cpus) × 32 MiB worth of
/// pages are waiting, or when an allocation finds no room (then it purges and retries once, as alloc_vmap_area).
/// (d) VmallocUsed (nr_vmalloc_pages) counts the pages owned by live VM_ALLOC areas.</para>
/// <para><b>4. Locking.</b> One lock, <c>_lock</c> (global; Linux splits it into free_vmap_area_lock, per-node busy
/// and lazy locks): it protects the pool, both trees, the lazy list and its page count. Page allocation, mmap/munmap
/// and zeroing run outside it: the caller owns its range exclusively between taking it from the free tree and
/// putting it on the busy tree (allocation) or between unlinking it from the busy tree and putting it on the lazy
/// list (free). While pages are being allocated the area is busy with VM_UNINITIALIZED, which /proc/vmallocinfo
/// skips. vfree may be called from any thread; in interrupt context (<see cref="Context.InInterrupt"/>) it defers
/// itself to vfree_atomic as Linux's does, and with preemption or interrupts disabled might_sleep reports. vfree_atomic (<see cref="VfreeAtomic"/>) takes no lock: it pushes the
/// address on a lock-free per-CPU list, stored in the freed memory itself as Linux's llist, and a work item (the
/// thread pool standing in for schedule_work) does the real vfree later; <see cref="FlushDeferred"/> is flush_work.</para>
/// <para><b>5. NOMMU.</b> Without memfd (<see cref="PhysicalMemory.HasMemfd"/> false) nothing can be remapped, so
/// vmalloc behaves as mm/nommu.c: the memory is physically contiguous, a compound block of 2^get_order(size) lowmem
/// pages (kmalloc semantics there), vmalloc_to_page is virt_to_page, and is_vmalloc_addr is false.</para>
/// <para><b>6. Host limit.</b> Each separately mapped run of frames is one host VMA, and so is each unmapped gap
/// between runs, so live areas × runs are bounded by the host's vm.max_map_count (65530 by default): about 30000
/// isolated one-page areas. When the host refuses a mapping, vmalloc undoes everything and fails with a report,
/// as for any other allocation failure. Frames are freed last-first so that the per-CPU list returns them in
/// ascending order and steady-state areas map as one run.</para>
/// <para><b>7. Deviations</b> (kmem is stricter where Linux is silent): vfree/vunmap must be given the area's start
/// (Linux accepts any address inside); vunmap of a VM_ALLOC area is reported instead of leaking its pages;
/// __GFP_ZERO is applied by clearing through the new mapping once, not per frame.</para>
/// </remarks>
public sealed unsafe partial class VmallocAllocator : IDisposable, IThreadPoolWorkItem
{
    private const int PageShift = ArchProfile.PageShift;
    private const ulong PageSize = ArchProfile.PageSize;

    private readonly Machine _m;
    private readonly PhysicalMemory _phys;
    private readonly PageAllocator _pages;
    private readonly MemMap _map;
    private readonly KernelLog _log;
    private readonly Lock _lock = new();
    private readonly VmapAreaPool _pool = new();
    private readonly VaTree _free;
    private readonly VaTree _busy;
    private readonly byte* _vmBase;
    private uint* _pte;
    private readonly nuint _pteBytes;
    private int _lazyHead;
    private long _lazyPages;
    private long _nrVmallocPages;
    private long _purges;
    private readonly long _totalRamPages; // totalram_pages(), fixed after boot (read without LINQ on the hot path)

    // vfree_atomic: per-CPU llists of addresses awaiting vfree, a "work scheduled" flag and the work's lock.
    private readonly nint[] _deferred;
    private int _workScheduled;
    private readonly Lock _workLock = new();
    private bool _disposed;

    /// <summary>VMALLOC_START / VMALLOC_END (kernel virtual).</summary>
    public ulong Start { get; }
    public ulong End { get; }
    public bool IsNommu { get; }
    /// <summary>lazy_max_pages(): fls(num_online_cpus()) * (32 MiB / PAGE_SIZE).</summary>
    public long LazyMaxPages { get; }
    /// <summary>kmalloc for the kvmalloc family: the machine's slab allocator unless a test substitutes one.</summary>
    public IKmalloc Kmalloc { get; set; }
    /// <summary>Persistent and local kmap (HIGHMEM).</summary>
    public HighMem.Highmem Highmem { get; }

    /// <summary>Pages owned by live VM_ALLOC areas (nr_vmalloc_pages; meminfo's VmallocUsed).</summary>
    public long NrVmallocPages => Interlocked.Read(ref _nrVmallocPages);
    /// <summary>Pages of freed ranges waiting for the next purge (vmap_lazy_nr).</summary>
    public long LazyPages { get { lock (_lock) return _lazyPages; } }
    /// <summary>Busy areas (allocated and not yet freed).</summary>
    public int BusyAreas { get { lock (_lock) return _busy.Count; } }
    /// <summary>Free ranges in the free tree.</summary>
    public int FreeRanges { get { lock (_lock) return _free.Count; } }
    /// <summary>Purges run so far.</summary>
    public long Purges => Interlocked.Read(ref _purges);

    internal VmallocAllocator(Machine m)
    {
        _m = m;
        _phys = m.Physical;
        _pages = m.Pages;
        _map = m.MemMap;
        _log = m.Log;
        _ratelimit = new RateLimit(_log, "vmalloc");
        _totalRamPages = m.TotalRamPages;
        _free = new VaTree(_pool);
        _busy = new VaTree(_pool);
        _deferred = new nint[m.CpuCount * 8]; // one 64-byte line per CPU
        IsNommu = !_phys.HasMemfd || _phys.VmallocSize == 0;
        LazyMaxPages = (32 - BitOperations.LeadingZeroCount((uint)m.CpuCount)) * ((32L << 20) >> PageShift);
        Kmalloc = new SlabKmalloc(m.Slab);
        if (!IsNommu)
        {
            Start = _phys.VmallocStart;
            End = _phys.VmallocEnd;
            _vmBase = _phys.WindowBase + _phys.VmallocOffset;
            _pteBytes = (nuint)(((End - Start) >> PageShift) * sizeof(uint));
            nint p = Libc.mmap(0, _pteBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
            if (p == Libc.MAP_FAILED) throw new KmemException($"kmem: cannot reserve the vmalloc page table: {Libc.LastError()}");
            _pte = (uint*)p;
            lock (_lock)
            {
                int id = _pool.Alloc();
                _pool[id].Start = Start;
                _pool[id].End = End;
                _pool[id].State = AreaState.Free;
                _free.Insert(id);
            }
        }
        Highmem = new HighMem.Highmem(m);
    }

    // =====================================================================================================
    // The vmalloc family
    // =====================================================================================================

    /// <summary>vmalloc(size): GFP_KERNEL, HIGHMEM frames allowed.</summary>
    public byte* Vmalloc(nuint size, [CallerMemberName] string caller = "") => VmallocNodeRange(size, PageSize, Gfp.Kernel, VmFlags.None, caller);

    /// <summary>vzalloc(size): vmalloc, zeroed.</summary>
    public byte* Vzalloc(nuint size, [CallerMemberName] string caller = "") => VmallocNodeRange(size, PageSize, Gfp.Kernel | Gfp.Zero, VmFlags.None, caller);

    /// <summary>vmalloc_32(size): frames addressable with 32 bits (GFP_VMALLOC32: GFP_DMA32|GFP_KERNEL on x86_64, GFP_KERNEL on x86_32).</summary>
    public byte* Vmalloc32(nuint size, [CallerMemberName] string caller = "") =>
        VmallocNodeRange(size, PageSize, Gfp.Kernel | (_m.Profile.Arch == Arch.X86_64 ? Gfp.Dma32 : 0), VmFlags.None, caller);

    /// <summary>__vmalloc(size, gfp).</summary>
    public byte* VmallocGfp(nuint size, Gfp gfp, [CallerMemberName] string caller = "") => VmallocNodeRange(size, PageSize, gfp, VmFlags.None, caller);

    /// <summary>vmalloc_user(size): zeroed, VM_USERMAP, SHMLBA (= PAGE_SIZE on x86) aligned.</summary>
    public byte* VmallocUser(nuint size, [CallerMemberName] string caller = "") => VmallocNodeRange(size, PageSize, Gfp.Kernel | Gfp.Zero, VmFlags.UserMap, caller);

    /// <summary>__vmalloc_node(size, align, gfp): what lib/test_vmalloc.c's aligned cases call.</summary>
    public byte* VmallocNode(nuint size, ulong align, Gfp gfp, [CallerMemberName] string caller = "") => VmallocNodeRange(size, align, gfp, VmFlags.None, caller);

    /// <summary>__vmalloc_node_range: the one real allocation path.</summary>
    public byte* VmallocNodeRange(nuint size, ulong align, Gfp gfp, VmFlags flags, string caller)
    {
        Context.MightAlloc(_m, gfp);
        if (Volatile.Read(ref _workScheduled) != 0) FlushDeferred();
        if (size == 0)
        {
            Warn($"WARNING: CPU: {Cpu.Current(_m.CpuCount)} PID: {CurrentTask.Pid} at mm/vmalloc.c __vmalloc_node_range_noprof: vmalloc of size 0");
            return null;
        }
        if (IsNommu) return NommuAlloc(size, gfp, flags);
        if (align == 0 || !BitOperations.IsPow2(align)) align = PageSize;
        if (align < PageSize) align = PageSize;
        ulong realSize = size;
        ulong bytes = ((ulong)size + PageSize - 1) & ~(PageSize - 1);
        long nrPages = (long)(bytes >> PageShift);
        if (bytes < realSize || nrPages > _totalRamPages)
        {
            WarnAlloc(gfp, $"vmalloc error: size {realSize}, exceeds total pages");
            return null;
        }
        ulong vaSize = bytes + ((flags & VmFlags.NoGuard) != 0 ? 0 : PageSize);
        int id = AllocVmapArea(vaSize, align, gfp, flags | VmFlags.Alloc | VmFlags.Uninitialized, caller);
        if (id == 0)
        {
            WarnAlloc(gfp, $"vmalloc error: size {realSize}, vm_struct allocation failed");
            return null;
        }
        ulong va = _pool[id].Start; // stable: we own the area until it is freed
        byte* host = HostOf(va);
        uint* pte = _pte + ((va - Start) >> PageShift);

        // __vmalloc_area_node: order-0 frames, NOWARN, HIGHMEM unless a DMA zone was asked for.
        Gfp pageGfp = (gfp & ~Gfp.Zero) | Gfp.NoWarn;
        if ((gfp & (Gfp.Dma | Gfp.Dma32)) == 0) pageGfp |= Gfp.HighMem;
        for (long i = 0; i < nrPages; i++)
        {
            PageFrame* page = _pages.AllocPages(pageGfp, 0);
            if (page == null)
            {
                FreeUnmappedPages(pte, i);
                lock (_lock)
                {
                    _busy.Remove(id);
                    FreeRangeLocked(id);
                }
                WarnAlloc(gfp, $"vmalloc error: size {realSize}, failed to allocate pages");
                return null;
            }
            page->Flags |= PageFlags.Vmalloc;
            page->Private = id;
            pte[i] = (uint)(_map.PageToPfn(page) + 1);
        }
        try
        {
            MapRuns(host, pte, nrPages);
        }
        catch (KmemException e)
        {
            // The host refused a mapping (vm.max_map_count: every separately mapped run is one host VMA).
            _phys.UnmapRange(host, (nuint)bytes);
            FreeUnmappedPages(pte, nrPages);
            lock (_lock)
            {
                _busy.Remove(id);
                FreeRangeLocked(id);
            }
            WarnAlloc(gfp, $"vmalloc error: size {realSize}, failed to map pages ({e.Message}; the host's vm.max_map_count bounds live mapped runs)");
            return null;
        }
        if ((gfp & Gfp.Zero) != 0) NativeMemory.Clear(host, (nuint)bytes);
        Interlocked.Add(ref _nrVmallocPages, nrPages);
        _m.Stat.Add(VmItem.NrVmallocPages, nrPages);
        ref VmapArea a = ref _pool[id];
        a.NrPages = (int)nrPages;
        a.MappedPages = (int)nrPages;
        Volatile.Write(ref Unsafe.As<VmFlags, uint>(ref a.Flags), (uint)(a.Flags & ~VmFlags.Uninitialized));
        return host;
    }

    /// <summary>Give back the frames of a failed allocation (nothing maps them), last first, clearing their PTEs.</summary>
    private void FreeUnmappedPages(uint* pte, long count)
    {
        for (long j = count - 1; j >= 0; j--)
        {
            PageFrame* p = _map.PfnToPage(pte[j] - 1);
            pte[j] = 0;
            p->Flags &= ~PageFlags.Vmalloc;
            p->Private = 0;
            _pages.FreePages(p, 0);
        }
    }

    /// <summary>Map the pages of a PTE run, one mmap per run of consecutive PFNs.</summary>
    private void MapRuns(byte* host, uint* pte, long nrPages)
    {
        long i = 0;
        while (i < nrPages)
        {
            long j = i + 1;
            while (j < nrPages && pte[j] == pte[j - 1] + 1) j++;
            _phys.MapFrames(host + (nuint)i * (nuint)PageSize, pte[i] - 1, j - i);
            i = j;
        }
    }

    /// <summary>vmap(pages, count, flags): map frames the caller owns into one virtually contiguous range.</summary>
    /// <exception cref="KmemException">a pointer that is not a page descriptor of this machine.</exception>
    public byte* Vmap(ReadOnlySpan<nint> pages, VmFlags flags = VmFlags.Map, [CallerMemberName] string caller = "")
    {
        if (pages.Length == 0 || pages.Length > _totalRamPages) return null;
        foreach (nint p in pages)
            if (!_map.IsValidPage((PageFrame*)p))
                throw Report(new KmemException($"vmap: {p:x} is not a struct page of this machine",
                    $"BUG: vmap: {p:x} is not a struct page of this machine (count {pages.Length})"));
        if (IsNommu)
            throw Report(new KmemException("vmap: not supported without an MMU", "vmap: not supported on a NOMMU kernel (no memfd mappings)"));
        ulong bytes = (ulong)pages.Length << PageShift;
        int id = AllocVmapArea(bytes + ((flags & VmFlags.NoGuard) != 0 ? 0 : PageSize), PageSize, Gfp.Kernel, (flags | VmFlags.Map | VmFlags.Uninitialized) & ~VmFlags.Alloc, caller);
        if (id == 0) return null;
        ulong va = _pool[id].Start;
        byte* host = HostOf(va);
        uint* pte = _pte + ((va - Start) >> PageShift);
        for (int i = 0; i < pages.Length; i++) pte[i] = (uint)(_map.PageToPfn((PageFrame*)pages[i]) + 1);
        MapRuns(host, pte, pages.Length);
        ref VmapArea a = ref _pool[id];
        a.MappedPages = pages.Length;
        Volatile.Write(ref Unsafe.As<VmFlags, uint>(ref a.Flags), (uint)(a.Flags & ~VmFlags.Uninitialized));
        return host;
    }

    /// <summary>vfree(addr): unmap the area, free its frames, and queue the address range for the lazy purge. Null is ignored.</summary>
    /// <exception cref="KmemException">"Trying to vfree() nonexistent vm area": not the start of a live area.</exception>
    public void Vfree(void* addr)
    {
        // vfree: from interrupt context the free is deferred (vfree_atomic); elsewhere it may sleep.
        if (Context.InInterrupt)
        {
            VfreeAtomic(addr);
            return;
        }
        Context.MightSleep(_m);
        if (Volatile.Read(ref _workScheduled) != 0) FlushDeferred();
        if (addr == null) return;
        if (IsNommu)
        {
            NommuFree(addr, "vfree");
            return;
        }
        string? err = Free(addr, VmFlags.Alloc | VmFlags.Map, "vfree");
        if (err != null) throw Report(new KmemException(FirstLine(err), err));
    }

    /// <summary>vunmap(addr): release a vmap() area; the frames stay the caller's.</summary>
    public void Vunmap(void* addr)
    {
        Context.MightSleep(_m);
        if (addr == null) return;
        string? err = IsNommu ? $"WARNING: Trying to vunmap() nonexistent vm area ({Kva(addr)})" : Free(addr, VmFlags.Map, "vunmap");
        if (err != null) throw Report(new KmemException(FirstLine(err), err));
    }

    /// <summary>
    /// vfree_atomic(addr): vfree from a context that cannot sleep. Takes no lock: the address is pushed on this CPU's
    /// lock-free list (the link is stored in the freed memory, as Linux's llist) and a work item frees it later.
    /// </summary>
    public void VfreeAtomic(void* addr)
    {
        if (addr == null) return;
        if (IsNommu)
        {
            NommuFree(addr, "vfree_atomic");
            return;
        }
        if (!_phys.IsVmallocAddress(addr) || ((nint)addr & (nint)(PageSize - 1)) != 0)
        {
            string r = $"WARNING: Trying to vfree() bad address ({Kva(addr)})";
            throw Report(new KmemException(r, r));
        }
        ref nint head = ref _deferred[Cpu.Current(_m.CpuCount) * 8];
        nint old;
        do
        {
            old = Volatile.Read(ref head);
            *(nint*)addr = old;
        } while (Interlocked.CompareExchange(ref head, (nint)addr, old) != old);
        if (Interlocked.Exchange(ref _workScheduled, 1) == 0)
            ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);
    }

    /// <summary>flush_work of the deferred-free work: every vfree_atomic so far is done when this returns.</summary>
    public void FlushDeferred()
    {
        lock (_workLock)
        {
            if (_disposed) return;
            Volatile.Write(ref _workScheduled, 0);
            for (int c = 0; c < _m.CpuCount; c++)
            {
                nint p = Interlocked.Exchange(ref _deferred[c * 8], 0);
                while (p != 0)
                {
                    nint next = *(nint*)p;
                    string? err = Free((void*)p, VmFlags.Alloc | VmFlags.Map, "vfree");
                    if (err != null) _log.Write(LogLevel.Warning, err); // nobody to throw to: the work item logs, as Linux's WARN
                    p = next;
                }
            }
        }
    }

    void IThreadPoolWorkItem.Execute() => FlushDeferred();

    /// <summary>remove_vm_area + the frees: returns a report on bad input (state untouched), else null.</summary>
    private string? Free(void* addr, VmFlags allowed, string fn)
    {
        if (!_phys.IsVmallocAddress(addr))
            return $"WARNING: Trying to {fn}() nonexistent vm area ({Kva(addr)})";
        ulong va = Start + (ulong)((byte*)addr - _vmBase);
        int id;
        lock (_lock)
        {
            id = _busy.FindContaining(va);
            if (id == 0) return $"WARNING: Trying to {fn}() nonexistent vm area ({Kva(addr)})";
            ref VmapArea a = ref _pool[id];
            if (a.Start != va) return $"WARNING: Trying to {fn}() bad address ({Kva(addr)}): inside the area at 0x{Hex(a.Start)}";
            if ((a.Flags & VmFlags.Uninitialized) != 0) return $"WARNING: Trying to {fn}() an area still being set up ({Kva(addr)})";
            if ((a.Flags & allowed) == 0)
                return $"WARNING: {fn}() of a vmalloc() area at {Kva(addr)} would leak its {a.NrPages} pages: use vfree()";
            _busy.Remove(id);
            a.State = AreaState.Unmapping;
        }
        // Outside the lock, we own the range. The stale-mapping rule: unmap and clear the PTEs first ...
        ref VmapArea v = ref _pool[id];
        uint* pte = _pte + ((v.Start - Start) >> PageShift);
        int mapped = v.MappedPages;
        if (mapped > 0) _phys.UnmapRange((byte*)addr, (nuint)mapped << PageShift);
        // ... then the frames may go back to the page allocator.
        if ((v.Flags & VmFlags.Alloc) != 0)
        {
            // Last page first: the per-CPU list is LIFO, so the next vmalloc gets these frames back in ascending
            // PFN order and maps them with one mmap per run instead of one per page (Linux frees first page
            // first, but its per-page PTE writes cost the same either way; ours cost a syscall and a host VMA per run).
            for (int i = mapped - 1; i >= 0; i--)
            {
                PageFrame* p = _map.PfnToPage(pte[i] - 1);
                pte[i] = 0;
                p->Flags &= ~PageFlags.Vmalloc;
                p->Private = 0;
                _pages.FreePages(p, 0);
            }
            Interlocked.Add(ref _nrVmallocPages, -v.NrPages);
            _m.Stat.Add(VmItem.NrVmallocPages, -v.NrPages);
        }
        else
        {
            new Span<uint>(pte, mapped).Clear();
        }
        lock (_lock)
        {
            // free_vmap_area_noflush: the range waits on the lazy list; purge when too much is waiting.
            v.State = AreaState.Lazy;
            v.NextLink = _lazyHead;
            _lazyHead = id;
            _lazyPages += (long)(v.Size >> PageShift);
            if (Tracing.Emit.Tracepoints.FreeVmapAreaNoflushOn) Tracing.Emit.Tracepoints.FreeVmapAreaNoflush(v.Start, (ulong)_lazyPages, (ulong)LazyMaxPages);
            if (_lazyPages > LazyMaxPages) PurgeLocked();
        }
        return null;
    }

    /// <summary>purge_vmap_area_lazy / vm_unmap_aliases: make every lazily freed range reusable now.</summary>
    public void PurgeVmapAreaLazy()
    {
        lock (_lock) PurgeLocked();
    }

    private void PurgeLocked()
    {
        int id = _lazyHead;
        if (id == 0) return;
        _lazyHead = 0;
        _lazyPages = 0;
        ulong lo = ulong.MaxValue, hi = 0; // purge_vmap_area_lazy's start/end: the span of the purged areas
        uint purged = 0;
        while (id != 0)
        {
            int next = _pool[id].NextLink;
            lo = Math.Min(lo, _pool[id].Start);
            hi = Math.Max(hi, _pool[id].End);
            purged++;
            FreeRangeLocked(id);
            id = next;
        }
        Interlocked.Increment(ref _purges);
        if (Tracing.Emit.Tracepoints.PurgeVmapAreaLazyOn) Tracing.Emit.Tracepoints.PurgeVmapAreaLazy(lo, hi, purged);
    }

    /// <summary>alloc_vmap_area: the lowest-address fit, purging the lazy list and retrying once when there is no room.</summary>
    private int AllocVmapArea(ulong size, ulong align, Gfp gfp, VmFlags flags, string caller)
    {
        lock (_lock)
        {
            for (int attempt = 0; ; attempt++)
            {
                int node = _free.FindLowest(_free.Root, size, align, out ulong at);
                if (node != 0)
                {
                    ref VmapArea f = ref _pool[node];
                    if (at == f.Start && at + size == f.End)
                    {
                        _free.Remove(node); // FL_FIT_TYPE
                        _pool.Free(node);
                    }
                    else if (at == f.Start)
                    {
                        f.Start += size; // LE_FIT_TYPE: order unchanged
                        _free.Propagate(node);
                    }
                    else if (at + size == f.End)
                    {
                        f.End = at; // RE_FIT_TYPE
                        _free.Propagate(node);
                    }
                    else
                    {
                        ulong end = f.End; // NE_FIT_TYPE: split in two
                        f.End = at;
                        _free.Propagate(node);
                        int rest = _pool.Alloc();
                        ref VmapArea r = ref _pool[rest];
                        r.Start = at + size;
                        r.End = end;
                        r.State = AreaState.Free;
                        _free.Insert(rest);
                    }
                    int id = _pool.Alloc();
                    ref VmapArea a = ref _pool[id];
                    a.Start = at;
                    a.End = at + size;
                    a.Flags = flags;
                    a.State = AreaState.Busy;
                    _pool.SetCaller(id, caller);
                    _busy.Insert(id);
                    if (Tracing.Emit.Tracepoints.AllocVmapAreaOn) Tracing.Emit.Tracepoints.AllocVmapArea(at, size, align, Start, End, false);
                    return id;
                }
                if (attempt > 0 || _lazyHead == 0) break;
                PurgeLocked();
            }
        }
        if ((gfp & Gfp.NoWarn) == 0 && Ratelimit())
            _log.Write(LogLevel.Warning, $"vmap allocation for size {size} failed: use vmalloc=<size> to increase size");
        if (Tracing.Emit.Tracepoints.AllocVmapAreaOn) Tracing.Emit.Tracepoints.AllocVmapArea(0, size, align, Start, End, true);
        return 0;
    }

    /// <summary>merge_or_add_vmap_area: give a range back to the free tree, merging with free neighbours. Takes over the node.</summary>
    private void FreeRangeLocked(int id)
    {
        ref VmapArea a = ref _pool[id];
        ulong s = a.Start, e = a.End;
        var (prev, next) = _free.Neighbours(s);
        bool mergeNext = next != 0 && _pool[next].Start == e;
        bool mergePrev = prev != 0 && _pool[prev].End == s;
        if (mergeNext && mergePrev)
        {
            ulong end = _pool[next].End;
            _free.Remove(next);
            _pool.Free(next);
            _pool[prev].End = end;
            _free.Propagate(prev);
            _pool.Free(id);
        }
        else if (mergeNext)
        {
            _pool[next].Start = s;
            _free.Propagate(next);
            _pool.Free(id);
        }
        else if (mergePrev)
        {
            _pool[prev].End = e;
            _free.Propagate(prev);
            _pool.Free(id);
        }
        else
        {
            a.State = AreaState.Free;
            a.Flags = 0;
            a.NrPages = a.MappedPages = 0;
            _pool.SetCaller(id, null);
            _free.Insert(id);
        }
    }

    // =====================================================================================================
    // Lookups
    // =====================================================================================================

    /// <summary>is_vmalloc_addr: inside [VMALLOC_START, VMALLOC_END) (always false on NOMMU).</summary>
    public bool IsVmallocAddr(void* addr) => !IsNommu && _phys.IsVmallocAddress(addr);

    /// <summary>vmalloc_to_page: the frame mapped at <paramref name="addr"/>, by walking the area's page table; null when unmapped.</summary>
    public PageFrame* VmallocToPage(void* addr)
    {
        if (IsNommu)
        {
            return _map.VirtToPage(addr);
        }
        if (!_phys.IsVmallocAddress(addr)) return null;
        uint e = Volatile.Read(ref _pte[(nuint)((byte*)addr - _vmBase) >> PageShift]);
        return e == 0 ? null : _map.PfnToPage(e - 1);
    }

    /// <summary>vmalloc_to_pfn, or -1 when unmapped.</summary>
    public long VmallocToPfn(void* addr)
    {
        PageFrame* p = VmallocToPage(addr);
        return p == null ? -1 : _map.PageToPfn(p);
    }

    /// <summary>find_vm_area: the live area containing <paramref name="addr"/>, if any.</summary>
    public VmStruct? FindVmArea(void* addr)
    {
        if (IsNommu || !_phys.IsVmallocAddress(addr)) return null;
        ulong va = Start + (ulong)((byte*)addr - _vmBase);
        lock (_lock)
        {
            int id = _busy.FindContaining(va);
            if (id == 0) return null;
            ref VmapArea a = ref _pool[id];
            return new VmStruct((nint)HostOf(a.Start), a.Start, a.Size, a.NrPages, a.Flags, _pool.Caller(id));
        }
    }

    // =====================================================================================================
    // NOMMU (mm/nommu.c: __vmalloc is kmalloc of a physically contiguous, compound block)
    // =====================================================================================================

    private byte* NommuAlloc(nuint size, Gfp gfp, VmFlags flags)
    {
        int order = PageAllocator.GetOrder((long)size);
        if (order > Zone.MaxOrder)
        {
            WarnAlloc(gfp, $"vmalloc error: size {size}, exceeds the largest physically contiguous block (NOMMU)");
            return null;
        }
        PageFrame* page = _pages.AllocPages((gfp | Gfp.Comp) & ~Gfp.HighMem, order);
        if (page == null) return null;
        page->Flags |= PageFlags.Vmalloc;
        byte* p = _map.PageAddress(page);
        if ((flags & VmFlags.UserMap) != 0 && (gfp & Gfp.Zero) == 0) NativeMemory.Clear(p, (nuint)PageSize << order);
        Interlocked.Add(ref _nrVmallocPages, 1L << order);
        _m.Stat.Add(VmItem.NrVmallocPages, 1L << order);
        return p;
    }

    private void NommuFree(void* addr, string fn)
    {
        PageFrame* page = _map.VirtToPage(addr);
        if (page == null || ((nint)addr & (nint)(PageSize - 1)) != 0 || !page->Has(PageFlags.Vmalloc) || !page->Has(PageFlags.AllocHead))
        {
            string r = $"WARNING: Trying to {fn}() nonexistent vm area ({Kva(addr)})";
            throw Report(new KmemException(r, r));
        }
        int order = page->Order;
        page->Flags &= ~PageFlags.Vmalloc;
        _pages.FreePages(page, order);
        Interlocked.Add(ref _nrVmallocPages, -(1L << order));
        _m.Stat.Add(VmItem.NrVmallocPages, -(1L << order));
    }

    // =====================================================================================================
    // Views and checks
    // =====================================================================================================

    /// <summary>/proc/vmallocinfo (mm/vmalloc.c vmalloc_info_show + show_numa_info + show_purge_info).</summary>
    public string VmallocInfo()
    {
        var sb = new StringBuilder();
        int ptrBytes = _m.Profile.Arch == Arch.X86_32 ? 4 : 8;
        lock (_lock)
        {
            _busy.ForEach(id =>
            {
                ref VmapArea a = ref _pool[id];
                VmFlags f = (VmFlags)Volatile.Read(ref Unsafe.As<VmFlags, uint>(ref a.Flags));
                if ((f & VmFlags.Uninitialized) != 0) return;
                sb.Append($"0x{Hex(a.Start)}-0x{Hex(a.End)} {(long)a.Size,7}");
                if (_pool.Caller(id) is { Length: > 0 } c) sb.Append(' ').Append(c);
                if (a.NrPages > 0) sb.Append($" pages={a.NrPages}");
                if ((f & VmFlags.IoRemap) != 0) sb.Append(" ioremap");
                if ((f & VmFlags.Alloc) != 0) sb.Append(" vmalloc");
                if ((f & VmFlags.Map) != 0) sb.Append(" vmap");
                if ((f & VmFlags.UserMap) != 0) sb.Append(" user");
                if ((f & VmFlags.DmaCoherent) != 0) sb.Append(" dma-coherent");
                // v->pages is vmalloc'ed when the pointer array exceeds a page (__vmalloc_area_node).
                if ((long)a.NrPages * ptrBytes > (long)PageSize) sb.Append(" vpages");
                if (a.NrPages > 0) sb.Append($" N0={a.NrPages}");
                sb.Append('\n');
            });
            for (int id = _lazyHead; id != 0; id = _pool[id].NextLink)
                sb.Append($"0x{Hex(_pool[id].Start)}-0x{Hex(_pool[id].End)} {(long)_pool[id].Size,7} unpurged vm_area\n");
        }
        return sb.ToString();
    }

    /// <summary>Check both trees and the tiling invariant; null when consistent.</summary>
    public string? CheckInvariants()
    {
        if (IsNommu) return null;
        lock (_lock)
        {
            string? p = _free.Check(merged: true) ?? _busy.Check(merged: false);
            if (p != null) return p;
            ulong total = 0;
            _free.ForEach(id => total += _pool[id].Size);
            _busy.ForEach(id => total += _pool[id].Size);
            for (int id = _lazyHead; id != 0; id = _pool[id].NextLink) total += _pool[id].Size;
            // Ranges being unmapped by a concurrent vfree are in no structure; only check when none are.
            int inStructures = _free.Count + _busy.Count + LazyCount();
            if (inStructures == _pool.InUse && total != End - Start)
                return $"ranges cover {total:x} bytes of a {End - Start:x}-byte area";
            return null;
        }
    }

    private int LazyCount()
    {
        int n = 0;
        for (int id = _lazyHead; id != 0; id = _pool[id].NextLink) n++;
        return n;
    }

    // =====================================================================================================
    // Helpers
    // =====================================================================================================

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private byte* HostOf(ulong va) => _vmBase + (nuint)(va - Start);

    private string Hex(ulong v) => v.ToString(_m.Profile.AddressHexDigits == 8 ? "x8" : "x16");
    private string Kva(void* p) => "0x" + Hex(_phys.ToKernelVirtual(p));
    private static string FirstLine(string s) => s.IndexOf('\n') is var i and >= 0 ? s[..i] : s;

    private T Report<T>(T ex) where T : KmemException
    {
        _log.Write(LogLevel.Warning, ex.Report);
        return ex;
    }

    private void Warn(string text) => _log.Write(LogLevel.Warning, text);

    /// <summary>warn_alloc(gfp, NULL, fmt): the vmalloc failure report, with a free-memory summary.</summary>
    private void WarnAlloc(Gfp gfp, string what)
    {
        if ((gfp & Gfp.NoWarn) != 0 || !Ratelimit()) return;
        _log.Write(LogLevel.Warning,
            $"{CurrentTask.Comm}: {what}, mode:0x{(uint)gfp:x}({GfpFormat.Format(gfp)}), nodemask=(null)\n{_pages.ShowFreeAreas()}");
    }

    private readonly RateLimit _ratelimit;

    /// <summary>printk_ratelimit() for vmalloc's reports.</summary>
    private bool Ratelimit() => _ratelimit.Allow();

    public void Dispose()
    {
        lock (_workLock)
        {
            if (_disposed) return;
        }
        FlushDeferred();
        lock (_workLock) _disposed = true;
        Highmem.Dispose();
        if (_pte != null)
        {
            Libc.munmap((nint)_pte, _pteBytes);
            _pte = null;
        }
        _pool.Dispose();
    }
}

/// <summary>What find_vm_area returns: a snapshot of one area (vm_struct). <see cref="Size"/> includes the guard page.</summary>
public readonly record struct VmStruct(nint Addr, ulong KernelAddr, ulong Size, int NrPages, VmFlags Flags, string? Caller);
