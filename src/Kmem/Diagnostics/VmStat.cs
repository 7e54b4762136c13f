using System.Runtime.CompilerServices;

namespace Kmem.Diagnostics;

/// <summary>
/// Counters behind /proc/vmstat and /proc/meminfo: events (pgalloc_*, pgfree, ...) and node state (nr_slab_*, ...).
/// Each subsystem adds the items it owns here. Names are Linux's /proc/vmstat names, in <see cref="VmStat.Name"/>.
/// </summary>
public enum VmItem
{
    // --- node state (pages, or bytes where Linux counts bytes)
    NrSlabReclaimable,
    NrSlabUnreclaimable,
    NrKernelStack,
    NrPageTablePages,
    NrVmallocPages,
    NrFilePages,
    NrAnonPages,
    NrActiveAnon,
    NrInactiveAnon,
    NrActiveFile,
    NrInactiveFile,
    NrDirty,
    NrWriteback,
    NrShmem,
    NrKernelMiscReclaimable,
    // --- events
    PgAllocDma,
    PgAllocDma32,
    PgAllocNormal,
    PgAllocHigh,
    PgAllocMovable,
    PgFree,
    PgFault,
    PgMajFault,
    PswpIn,
    PswpOut,
    PgScanKswapd,
    PgScanDirect,
    PgStealKswapd,
    PgStealDirect,
    AllocStallDma,
    AllocStallDma32,
    AllocStallNormal,
    AllocStallHigh,
    AllocStallMovable,
    CompactStall,
    CompactFail,
    CompactSuccess,
    CompactMigrateScanned,
    CompactFreeScanned,
    OomKill,
    KswapdWakeups,
    PageOutRun,
    SlabsScanned,
    Count_,
}

/// <summary>
/// Per-CPU counters summed on read, as Linux's vm_stat_diff: the hot paths never share a cache line.
/// </summary>
public sealed class VmStat
{
    private const int Stride = ((int)VmItem.Count_ + 7) & ~7;
    // One row per CPU, padded to 64 bytes so CPUs never write the same line.
    private readonly long[] _counters;
    private readonly int _cpus;

    public VmStat(int cpus)
    {
        _cpus = cpus;
        _counters = new long[(cpus + 1) * Stride];
    }

    /// <summary>Add to an item on the calling CPU's row (the row is per CPU, so increments use Interlocked only for thread safety across threads sharing a CPU).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(VmItem item, long delta)
    {
        int cpu = Cpu.Current(_cpus);
        Interlocked.Add(ref _counters[cpu * Stride + (int)item], delta);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Inc(VmItem item) => Add(item, 1);

    private Func<VmItem, long>[] _sources = [];

    /// <summary>
    /// Add a counter source summed into every read: a subsystem that counts events under its own per-CPU lock (the
    /// page allocator's pcp fast paths) reports them here instead of paying an atomic add per event.
    /// </summary>
    public void AddSource(Func<VmItem, long> source)
    {
        lock (_counters) _sources = [.. _sources, source];
    }

    public long this[VmItem item]
    {
        get
        {
            long sum = 0;
            for (int c = 0; c < _cpus; c++) sum += Volatile.Read(ref _counters[c * Stride + (int)item]);
            foreach (var s in Volatile.Read(ref _sources)) sum += s(item);
            return sum;
        }
    }

    /// <summary>The /proc/vmstat name of an item.</summary>
    public static string Name(VmItem item) => item switch
    {
        VmItem.NrSlabReclaimable => "nr_slab_reclaimable",
        VmItem.NrSlabUnreclaimable => "nr_slab_unreclaimable",
        VmItem.NrKernelStack => "nr_kernel_stack",
        VmItem.NrPageTablePages => "nr_page_table_pages",
        VmItem.NrVmallocPages => "nr_vmalloc",
        VmItem.NrFilePages => "nr_file_pages",
        VmItem.NrAnonPages => "nr_anon_pages",
        VmItem.NrActiveAnon => "nr_active_anon",
        VmItem.NrInactiveAnon => "nr_inactive_anon",
        VmItem.NrActiveFile => "nr_active_file",
        VmItem.NrInactiveFile => "nr_inactive_file",
        VmItem.NrDirty => "nr_dirty",
        VmItem.NrWriteback => "nr_writeback",
        VmItem.NrShmem => "nr_shmem",
        VmItem.NrKernelMiscReclaimable => "nr_kernel_misc_reclaimable",
        VmItem.PgAllocDma => "pgalloc_dma",
        VmItem.PgAllocDma32 => "pgalloc_dma32",
        VmItem.PgAllocNormal => "pgalloc_normal",
        VmItem.PgAllocHigh => "pgalloc_high",
        VmItem.PgAllocMovable => "pgalloc_movable",
        VmItem.PgFree => "pgfree",
        VmItem.PgFault => "pgfault",
        VmItem.PgMajFault => "pgmajfault",
        VmItem.PswpIn => "pswpin",
        VmItem.PswpOut => "pswpout",
        VmItem.PgScanKswapd => "pgscan_kswapd",
        VmItem.PgScanDirect => "pgscan_direct",
        VmItem.PgStealKswapd => "pgsteal_kswapd",
        VmItem.PgStealDirect => "pgsteal_direct",
        VmItem.AllocStallDma => "allocstall_dma",
        VmItem.AllocStallDma32 => "allocstall_dma32",
        VmItem.AllocStallNormal => "allocstall_normal",
        VmItem.AllocStallHigh => "allocstall_high",
        VmItem.AllocStallMovable => "allocstall_movable",
        VmItem.CompactStall => "compact_stall",
        VmItem.CompactFail => "compact_fail",
        VmItem.CompactSuccess => "compact_success",
        VmItem.CompactMigrateScanned => "compact_migrate_scanned",
        VmItem.CompactFreeScanned => "compact_free_scanned",
        VmItem.OomKill => "oom_kill",
        VmItem.KswapdWakeups => "kswapd_wakeups",
        VmItem.PageOutRun => "pageoutrun",
        VmItem.SlabsScanned => "slabs_scanned",
        _ => item.ToString(),
    };

    public static VmItem PgAllocFor(ZoneType z) => z switch
    {
        ZoneType.Dma => VmItem.PgAllocDma,
        ZoneType.Dma32 => VmItem.PgAllocDma32,
        ZoneType.HighMem => VmItem.PgAllocHigh,
        ZoneType.Movable => VmItem.PgAllocMovable,
        _ => VmItem.PgAllocNormal,
    };

    public static VmItem AllocStallFor(ZoneType z) => z switch
    {
        ZoneType.Dma => VmItem.AllocStallDma,
        ZoneType.Dma32 => VmItem.AllocStallDma32,
        ZoneType.HighMem => VmItem.AllocStallHigh,
        ZoneType.Movable => VmItem.AllocStallMovable,
        _ => VmItem.AllocStallNormal,
    };
}
