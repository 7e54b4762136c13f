using Kmem.Diagnostics;
using Kmem.PageAlloc;
using Kmem.Physical;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// A booted kernel memory world: physical memory, the memory map, the page allocator and (as later subsystems
/// attach) slab, vmalloc, reclaim and tracing. Disposing it releases every byte it reserved.
/// </summary>
/// <remarks>
/// Lifetime: <see cref="Boot"/> allocates everything a subsystem needs for its whole life (zones, per-CPU lists,
/// the memory map); after boot, allocator operations allocate no managed memory. Subsystems are owned by the
/// machine and disposed in reverse order of attachment.
/// </remarks>
public sealed class Machine : IDisposable
{
    private readonly List<IDisposable> _owned = new();
    private bool _disposed;

    public MachineConfig Config { get; }
    public ArchProfile Profile => Config.Profile;
    public int CpuCount => Config.Cpus;
    public MemoryLayout Layout { get; }
    public PhysicalMemory Physical { get; }
    public MemMap MemMap { get; }
    public PageAllocator Pages { get; }
    public KernelLog Log { get; } = new();
    public VmStat Stat { get; }
    /// <summary>The slab allocator: object caches and kmalloc.</summary>
    public SlabAllocator Slab { get; }
    /// <summary>might_sleep's reporter: choose throw or warn-and-continue with <see cref="SleepChecker.Mode"/>.</summary>
    public SleepChecker SleepCheck => Pages.SleepCheck;
    /// <summary>Reclaim, kswapd, swap, shrinkers, OOM killer and the processes with user memory (the slow path).</summary>
    public Reclaim.Reclaimer Reclaim { get; }
    /// <summary>vmalloc, vmap, kvmalloc and (through <see cref="Vmalloc.VmallocAllocator.Highmem"/>) kmap.</summary>
    public Vmalloc.VmallocAllocator Vmalloc { get; }

    /// <summary>Swap space, in pages, once a swap device is attached (SwapTotal/SwapFree in meminfo).</summary>
    public long SwapTotalPages { get; set; }
    public long SwapFreePages { get; set; }
    /// <summary>Committed_AS in pages (user mappings that could need memory).</summary>
    public long CommittedPages { get; set; }

    private Machine(MachineConfig config)
    {
        if (config.Cpus is < 1 or > 255) throw new ArgumentException($"cpus must be between 1 and 255 (got {config.Cpus})");
        Config = config;
        Layout = MemoryLayout.Compute(config);
        Stat = new VmStat(config.Cpus);
        Physical = new PhysicalMemory(config.Profile, Layout, config.EffectiveVmallocBytes, config.ForceNoMemfd);
        try
        {
            MemMap = new MemMap(Physical);
            Pages = new PageAllocator(config, Layout, Physical, MemMap, Log, Stat);
            // Subsystems attach here, in dependency order (each owns its native memory; see Own()).
            Slab = Own(new SlabAllocator(this));
            Reclaim = Own(new Reclaim.Reclaimer(this));
            Vmalloc = Own(new Vmalloc.VmallocAllocator(this));
        }
        catch
        {
            MemMap?.Dispose();
            Physical.Dispose();
            throw;
        }
    }

    /// <summary>Boot a machine.</summary>
    public static Machine Boot(MachineConfig? config = null) => new(config ?? MachineConfig.Default);

    /// <summary>Let a subsystem be disposed with the machine (before the page allocator and memory go away).</summary>
    public T Own<T>(T subsystem) where T : IDisposable
    {
        _owned.Add(subsystem);
        return subsystem;
    }

    /// <summary>Total managed pages (totalram_pages).</summary>
    public long TotalRamPages => Pages.Zones.Sum(z => z.ManagedPages);
    /// <summary>Free pages on the buddy lists of every zone (global NR_FREE_PAGES).</summary>
    public long FreePages => Pages.Zones.Sum(z => z.FreePages);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        MemMap.Dispose();
        Physical.Dispose();
    }
}
