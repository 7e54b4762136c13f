namespace Kmem;

/// <summary>
/// What a machine boots with. Either <see cref="RamBytes"/> or <see cref="ZoneManagedPages"/> sizes it.
/// Defaults are Linux's: min_free_kbytes as calculate_min_free_kbytes computes it, watermark_scale_factor 10,
/// lowmem_reserve_ratio {DMA 256, DMA32 256, Normal 32, HighMem 0, Movable 0}.
/// </summary>
public sealed record MachineConfig
{
    public ArchProfile Profile { get; init; } = ArchProfile.X86_64;

    /// <summary>RAM size in bytes (rounded down to whole pages). Ignored when <see cref="ZoneManagedPages"/> is set.</summary>
    public long RamBytes { get; init; } = 512L << 20;

    /// <summary>Explicit managed pages per zone, instead of <see cref="RamBytes"/> (e.g. to reproduce a real machine's zoneinfo).</summary>
    public IReadOnlyDictionary<ZoneType, long>? ZoneManagedPages { get; init; }

    public int Cpus { get; init; } = 2;

    /// <summary>vm.min_free_kbytes; null = computed as Linux does at boot.</summary>
    public int? MinFreeKbytes { get; init; }

    /// <summary>vm.watermark_scale_factor in 1/10000 of managed memory (Linux default 10 = 0.1%).</summary>
    public int WatermarkScaleFactor { get; init; } = 10;

    /// <summary>vm.lowmem_reserve_ratio per zone; 0 disables protection of that zone against higher-zone allocations.</summary>
    public IReadOnlyDictionary<ZoneType, int> LowmemReserveRatio { get; init; } = new Dictionary<ZoneType, int>
    {
        [ZoneType.Dma] = 256, [ZoneType.Dma32] = 256, [ZoneType.Normal] = 32, [ZoneType.HighMem] = 0, [ZoneType.Movable] = 0, [ZoneType.Device] = 0,
    };

    /// <summary>Size of the vmalloc area (Linux's vmalloc= boot parameter on x86_32); null = the profile's default.</summary>
    public ulong? VmallocBytes { get; init; }

    /// <summary>Force the fallback without memfd (one aligned native block; vmalloc then behaves as on a NOMMU kernel).</summary>
    public bool ForceNoMemfd { get; init; }

    public ulong EffectiveVmallocBytes => VmallocBytes ?? (Profile.Arch == Arch.X86_32
        ? ArchProfile.DefaultX86_32VmallocReserve
        : ArchProfile.DefaultX86_64VmallocSize);

    /// <summary>The default machine of <c>kmem run</c>: x86_64, 512 MiB, 2 CPUs.</summary>
    public static MachineConfig Default { get; } = new();
}
