using System.Runtime.CompilerServices;
using Kmem.Diagnostics;
using Kmem.Physical;

namespace Kmem.HighMem;

/// <summary>
/// Temporary kernel mappings of HIGHMEM frames (mm/highmem.c): the persistent kmap window and the per-CPU
/// kmap_local/kmap_atomic slots. Frames above the lowmem limit have no permanent mapping (page_address is null);
/// these give them one, for real, in the machine's window.
/// </summary>
/// <remarks>
/// <para><b>1. Persistent kmap.</b> LAST_PKMAP = 1024 page slots from PKMAP_BASE (0xff800000). pkmap_count[i]: 0 =
/// free and unmapped; 1 = mapped but unused (the mapping is kept so a kmap of the same page reuses it, and is
/// dropped in a batch by flush_all_zero_pkmaps when the allocation cursor wraps); n ≥ 2 = n-1 users. A page→slot
/// table (page_address_htable) finds an existing mapping. When no slot is free, kmap <em>sleeps</em> (Monitor.Wait)
/// until a kunmap drops a slot to 1 and wakes the waiters, which is why kmap is forbidden in atomic context.
/// Flush rule: a slot is unmapped (count 1 → 0) before it is reused.</para>
/// <para><b>2. Local kmap.</b> kmap_local_page/kmap_atomic use KM_MAX_IDX = 16 stack-ordered slots per CPU in the
/// fixmap area (from FIXADDR_START); they are mapped at push and unmapped at pop, and must be released in reverse
/// order (a wrong-order kunmap_local is reported, and nothing changes). Linux disables migration and keeps the stack
/// in the task, remapping it on context switch; kmem cannot remap under a running thread, so a thread owns a CPU's
/// slot stack from its first kmap_local until its last kunmap_local, and a second thread wanting the same CPU takes
/// another idle CPU's stack (or spins until one is free).</para>
/// <para><b>3. Lowmem and x86_64.</b> A page with a permanent mapping (every page on x86_64; lowmem on x86_32; every
/// page without memfd, where RAM is one flat block) is returned at that address, and kunmap does nothing.</para>
/// <para><b>4. Locking.</b> kmap_lock (a monitor: global) protects pkmap_count, the slot→pfn and page→slot tables and
/// the cursor; the mmap that fills a slot runs under it, as Linux sets the PTE under kmap_lock. Local slots are
/// owned by one thread (see 2) and need no lock beyond the owner CAS.</para>
/// </remarks>
public sealed unsafe class Highmem : IDisposable
{
    public const int LastPkmap = ArchProfile.LastPkmap;
    /// <summary>KM_MAX_IDX: nested kmap_local mappings per CPU (include/asm-generic/kmap_size.h, without DEBUG_KMAP_LOCAL).</summary>
    public const int KmMaxIdx = 16;
    private const int PageSize = ArchProfile.PageSize;

    private readonly Machine _m;
    private readonly PhysicalMemory _phys;
    private readonly MemMap _map;
    private readonly bool _hasHighmem;
    private readonly object _kmapLock = new();
    private readonly int[] _pkmapCount = new int[LastPkmap];
    private readonly long[] _pkmapPfn = new long[LastPkmap];
    private readonly Dictionary<long, int> _slotOf = new(LastPkmap);
    private int _lastPkmapNr;
    private int _waiters;
    private long _flushes;

    private readonly int[] _localOwner;
    private readonly int[] _localDepth;
    private readonly long[] _localPfn;
    private readonly int _localSlots;

    internal Highmem(Machine m)
    {
        _m = m;
        _phys = m.Physical;
        _map = m.MemMap;
        _hasHighmem = m.Profile.Arch == Arch.X86_32 && _phys.HasMemfd && _phys.LowmemPfnEnd < _phys.MaxPfn;
        _localOwner = new int[m.CpuCount * 16];
        _localDepth = new int[m.CpuCount * 16];
        _localPfn = new long[m.CpuCount * KmMaxIdx];
        // Slots between FIXADDR_START and FIXADDR_TOP (0xfffff000).
        _localSlots = m.Profile.Arch == Arch.X86_32 ? (int)((0xfffff000UL - ArchProfile.X86_32_FixaddrStart) / PageSize) : 0;
    }

    /// <summary>Threads sleeping in kmap for a free slot.</summary>
    public int Waiters { get { lock (_kmapLock) return _waiters; } }
    /// <summary>flush_all_zero_pkmaps runs.</summary>
    public long Flushes { get { lock (_kmapLock) return _flushes; } }
    /// <summary>pkmap slots with users (count ≥ 2).</summary>
    public int PkmapInUse
    {
        get
        {
            lock (_kmapLock)
            {
                int n = 0;
                foreach (int c in _pkmapCount) if (c >= 2) n++;
                return n;
            }
        }
    }

    /// <summary>Does this page need a temporary mapping (HIGHMEM with real mappings)?</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool NeedsMap(PageFrame* page) => _hasHighmem && _map.PageToPfn(page) >= _phys.LowmemPfnEnd;

    private byte* FlatAddress(PageFrame* page) =>
        _phys.HasMemfd ? _map.PageAddress(page) : _phys.WindowBase + (nuint)_map.PageToPfn(page) * PageSize;

    private byte* PkmapHost(int slot) => _phys.WindowBase + _phys.PkmapOffset + (nuint)slot * PageSize;
    private byte* LocalHost(int slot) => _phys.WindowBase + _phys.FixmapOffset + (nuint)slot * PageSize;

    // =====================================================================================================
    // Persistent kmap
    // =====================================================================================================

    /// <summary>kmap(page): a mapping that lasts until kunmap; sleeps while all LAST_PKMAP slots are in use.</summary>
    public byte* Kmap(PageFrame* page)
    {
        Context.MightSleep(_m); // kmap may sleep for a slot: forbidden in atomic context
        CheckPage(page, "kmap");
        if (!NeedsMap(page)) return FlatAddress(page);
        long pfn = _map.PageToPfn(page);
        lock (_kmapLock)
        {
            if (!_slotOf.TryGetValue(pfn, out int slot)) slot = MapNewVirtual(pfn);
            _pkmapCount[slot]++;
            return PkmapHost(slot);
        }
    }

    private int MapNewVirtual(long pfn)
    {
        int count = LastPkmap;
        while (true)
        {
            _lastPkmapNr = (_lastPkmapNr + 1) & (LastPkmap - 1);
            if (_lastPkmapNr == 0)
            {
                FlushAllZeroPkmaps();
                count = LastPkmap;
            }
            if (_pkmapCount[_lastPkmapNr] == 0) break;
            if (--count > 0) continue;
            // Every slot is in use: sleep until a kunmap frees one (pkmap_map_wait).
            _waiters++;
            try { Monitor.Wait(_kmapLock); }
            finally { _waiters--; }
            if (_slotOf.TryGetValue(pfn, out int mapped)) return mapped; // somebody else mapped it while we slept
            count = LastPkmap;
        }
        int s = _lastPkmapNr;
        _phys.MapFrames(PkmapHost(s), pfn, 1);
        _pkmapCount[s] = 1;
        _pkmapPfn[s] = pfn;
        _slotOf[pfn] = s;
        return s;
    }

    /// <summary>flush_all_zero_pkmaps: unmap, in runs, every slot that is mapped but unused, and make it free.</summary>
    private void FlushAllZeroPkmaps()
    {
        _flushes++;
        int i = 0;
        while (i < LastPkmap)
        {
            if (_pkmapCount[i] != 1)
            {
                i++;
                continue;
            }
            int j = i;
            while (j < LastPkmap && _pkmapCount[j] == 1)
            {
                _pkmapCount[j] = 0;
                _slotOf.Remove(_pkmapPfn[j]);
                _pkmapPfn[j] = -1;
                j++;
            }
            _phys.UnmapRange(PkmapHost(i), (nuint)(j - i) * PageSize);
            i = j;
        }
    }

    /// <summary>kunmap(page): drop one use; the slot stays mapped (count 1) until the next flush. Wakes sleeping kmap callers.</summary>
    public void Kunmap(PageFrame* page)
    {
        CheckPage(page, "kunmap");
        if (!NeedsMap(page)) return;
        long pfn = _map.PageToPfn(page);
        lock (_kmapLock)
        {
            if (!_slotOf.TryGetValue(pfn, out int slot) || _pkmapCount[slot] < 2)
                throw Report($"kernel BUG at mm/highmem.c: kunmap_high: pfn {pfn:x} is not kmapped (unbalanced kunmap)");
            if (--_pkmapCount[slot] == 1 && _waiters > 0) Monitor.PulseAll(_kmapLock);
        }
    }

    /// <summary>page_address for any page: the direct map, the current pkmap mapping of a HIGHMEM page, or null.</summary>
    public byte* PageAddress(PageFrame* page)
    {
        if (!NeedsMap(page)) return FlatAddress(page);
        lock (_kmapLock) return _slotOf.TryGetValue(_map.PageToPfn(page), out int slot) ? PkmapHost(slot) : null;
    }

    // =====================================================================================================
    // kmap_local / kmap_atomic
    // =====================================================================================================

    /// <summary>kmap_local_page(page): a CPU-local, stack-ordered mapping usable in atomic context.</summary>
    public byte* KmapLocalPage(PageFrame* page)
    {
        CheckPage(page, "kmap_local_page");
        if (!NeedsMap(page)) return FlatAddress(page);
        int me = Environment.CurrentManagedThreadId;
        int cpu = OwnedCpu(me);
        if (cpu < 0) cpu = ClaimCpu(me);
        int idx = _localDepth[cpu];
        int slot = cpu * KmMaxIdx + idx;
        if (idx >= KmMaxIdx || slot >= _localSlots)
        {
            if (idx == 0) Volatile.Write(ref _localOwner[cpu], 0);
            throw Report(idx >= KmMaxIdx
                ? $"kernel BUG at mm/highmem.c: kmap_local_idx_push: more than KM_MAX_IDX ({KmMaxIdx}) nested kmap_local mappings on CPU {cpu}"
                : $"kmem: the fixmap area has {_localSlots} slots, too few for KM_MAX_IDX x {_m.CpuCount} CPUs");
        }
        _phys.MapFrames(LocalHost(slot), _map.PageToPfn(page), 1);
        _localPfn[slot] = _map.PageToPfn(page);
        _localDepth[cpu] = idx + 1;
        return LocalHost(slot);
    }

    /// <summary>kmap_atomic(page): kmap_local_page with preemption and page faults disabled.</summary>
    public byte* KmapAtomic(PageFrame* page) => KmapLocalPage(page);

    /// <summary>kunmap_local(addr): release the most recent local mapping; any address inside its page will do.</summary>
    public void KunmapLocal(void* addr)
    {
        byte* page = (byte*)((nint)addr & ~(nint)(PageSize - 1));
        byte* first = LocalHost(0);
        if (!_hasHighmem || page < first || page >= first + (nuint)_localSlots * PageSize) return; // lowmem: nothing to undo
        int me = Environment.CurrentManagedThreadId;
        int cpu = OwnedCpu(me);
        if (cpu < 0 || _localDepth[cpu] == 0)
            throw Report($"WARNING: CPU: {Cpu.Current(_m.CpuCount)} PID: {CurrentTask.Pid} at mm/highmem.c kunmap_local_indexed: 0x{_phys.ToKernelVirtual(addr):x8} is not a kmap_local mapping of this task");
        int slot = cpu * KmMaxIdx + _localDepth[cpu] - 1;
        byte* expected = LocalHost(slot);
        if (page != expected)
            throw Report($"WARNING: CPU: {cpu} PID: {CurrentTask.Pid} at mm/highmem.c kunmap_local_indexed: kunmap_local(0x{_phys.ToKernelVirtual(addr):x8}) out of order: " +
                         $"the most recent kmap_local is 0x{_phys.ToKernelVirtual(expected):x8}; release in reverse order");
        _phys.UnmapRange(expected, PageSize);
        _localPfn[slot] = -1;
        if (--_localDepth[cpu] == 0) Volatile.Write(ref _localOwner[cpu], 0);
    }

    /// <summary>kunmap_atomic(addr).</summary>
    public void KunmapAtomic(void* addr) => KunmapLocal(addr);

    /// <summary>Local mappings the calling thread holds.</summary>
    public int LocalDepth
    {
        get
        {
            int cpu = OwnedCpu(Environment.CurrentManagedThreadId);
            return cpu < 0 ? 0 : _localDepth[cpu];
        }
    }

    private int OwnedCpu(int me)
    {
        for (int c = 0; c < _m.CpuCount; c++)
            if (Volatile.Read(ref _localOwner[c]) == me) return c;
        return -1;
    }

    private int ClaimCpu(int me)
    {
        int n = _m.CpuCount;
        int pref = Cpu.Current(n);
        var spin = new SpinWait();
        while (true)
        {
            for (int k = 0; k < n; k++)
            {
                int c = (pref + k) % n;
                if (Interlocked.CompareExchange(ref _localOwner[c], me, 0) == 0) return c;
            }
            spin.SpinOnce();
        }
    }

    private void CheckPage(PageFrame* page, string fn)
    {
        if (!_map.IsValidPage(page))
            throw Report($"BUG: {fn}: {(nint)page:x} is not a struct page of this machine");
    }

    private KmemException Report(string report)
    {
        _m.Log.Write(LogLevel.Warning, report);
        return new KmemException(report, report);
    }

    public void Dispose()
    {
        // The mappings live in the machine's window, which PhysicalMemory releases as a whole.
    }
}
