namespace Kmem;

/// <summary>One zone's PFN span: [StartPfn, EndPfn), of which ManagedPages are handed to the buddy allocator.</summary>
public readonly record struct ZoneSpan(ZoneType Type, long StartPfn, long EndPfn, long ReservedPages)
{
    public long SpannedPages => EndPfn - StartPfn;
    public long PresentPages => SpannedPages;
    public long ManagedPages => SpannedPages - ReservedPages;
}

/// <summary>
/// Where each zone lies in physical memory. x86 reserves the first 1 MiB (real-mode and BIOS areas), so ZONE_DMA
/// manages 4096 - 256 = 3840 pages, exactly what a real x86-64 kernel reports; other zones are fully managed
/// (Linux also deducts the memory map and memblock reservations; kmem keeps its memory map outside "RAM").
/// </summary>
public sealed class MemoryLayout
{
    /// <summary>Pages below 1 MiB that x86 keeps reserved.</summary>
    public const long LowReservedPages = (1L << 20) >> ArchProfile.PageShift;

    public IReadOnlyList<ZoneSpan> Zones { get; }
    /// <summary>One past the highest PFN of RAM.</summary>
    public long MaxPfn { get; }
    /// <summary>One past the highest direct-mapped PFN (max_low_pfn). Equals MaxPfn on x86_64.</summary>
    public long LowmemPfnEnd { get; }

    private MemoryLayout(List<ZoneSpan> zones, long lowmemEnd)
    {
        Zones = zones;
        MaxPfn = zones.Count == 0 ? 0 : zones.Max(z => z.EndPfn);
        LowmemPfnEnd = Math.Min(lowmemEnd, MaxPfn);
    }

    public ZoneSpan? Find(ZoneType t)
    {
        foreach (var z in Zones) if (z.Type == t) return z;
        return null;
    }

    public static MemoryLayout Compute(MachineConfig cfg)
    {
        var p = cfg.Profile;
        long maxLowPfn = p.Arch == Arch.X86_32
            ? (long)(p.MaxLowmemBytes(cfg.EffectiveVmallocBytes) >> ArchProfile.PageShift)
            : long.MaxValue;
        var zones = new List<ZoneSpan>();
        if (cfg.ZoneManagedPages is { } explicitZones)
        {
            foreach (var kv in explicitZones)
                if (!p.Has(kv.Key))
                    throw new ArgumentException($"profile {p.Name} has no zone {ZoneNames.Of(kv.Key)}");
            long Get(ZoneType t) => explicitZones.TryGetValue(t, out var v) ? v : 0;
            long dma = Get(ZoneType.Dma);
            if (dma > 0)
            {
                if (dma + LowReservedPages > ArchProfile.DmaPfnLimit)
                    throw new ArgumentException($"DMA={dma} pages does not fit below 16 MiB (at most {ArchProfile.DmaPfnLimit - LowReservedPages})");
                zones.Add(new ZoneSpan(ZoneType.Dma, 0, Math.Max(ArchProfile.DmaPfnLimit, dma + LowReservedPages), ArchProfile.DmaPfnLimit - dma));
            }
            if (p.Arch == Arch.X86_64)
            {
                long dma32 = Get(ZoneType.Dma32);
                if (dma32 > 0)
                {
                    if (ArchProfile.DmaPfnLimit + dma32 > ArchProfile.Dma32PfnLimit)
                        throw new ArgumentException($"DMA32={dma32} pages does not fit below 4 GiB");
                    zones.Add(new ZoneSpan(ZoneType.Dma32, ArchProfile.DmaPfnLimit, ArchProfile.DmaPfnLimit + dma32, 0));
                }
                long normal = Get(ZoneType.Normal);
                if (normal > 0)
                    zones.Add(new ZoneSpan(ZoneType.Normal, ArchProfile.Dma32PfnLimit, ArchProfile.Dma32PfnLimit + normal, 0));
                return new MemoryLayout(zones, long.MaxValue);
            }
            else
            {
                long normal = Get(ZoneType.Normal);
                long start = ArchProfile.DmaPfnLimit;
                if (normal > 0)
                {
                    if (start + normal > maxLowPfn)
                        throw new ArgumentException($"Normal={normal} pages exceeds lowmem (MAXMEM is {maxLowPfn} pages with this vmalloc reserve)");
                    zones.Add(new ZoneSpan(ZoneType.Normal, start, start + normal, 0));
                }
                long high = Get(ZoneType.HighMem);
                if (high > 0)
                    zones.Add(new ZoneSpan(ZoneType.HighMem, maxLowPfn, maxLowPfn + high, 0));
                return new MemoryLayout(zones, maxLowPfn);
            }
        }

        long total = cfg.RamBytes >> ArchProfile.PageShift;
        if (total < 2 * ArchProfile.DmaPfnLimit)
            throw new ArgumentException($"RAM of {cfg.RamBytes >> 20} MiB is too small (at least 32 MiB)");
        zones.Add(new ZoneSpan(ZoneType.Dma, 0, ArchProfile.DmaPfnLimit, LowReservedPages));
        if (p.Arch == Arch.X86_64)
        {
            zones.Add(new ZoneSpan(ZoneType.Dma32, ArchProfile.DmaPfnLimit, Math.Min(total, ArchProfile.Dma32PfnLimit), 0));
            if (total > ArchProfile.Dma32PfnLimit)
                zones.Add(new ZoneSpan(ZoneType.Normal, ArchProfile.Dma32PfnLimit, total, 0));
            return new MemoryLayout(zones, long.MaxValue);
        }
        long low = Math.Min(total, maxLowPfn);
        zones.Add(new ZoneSpan(ZoneType.Normal, ArchProfile.DmaPfnLimit, low, 0));
        if (total > low)
            zones.Add(new ZoneSpan(ZoneType.HighMem, low, total, 0));
        return new MemoryLayout(zones, maxLowPfn);
    }
}

/// <summary>Zone names as Linux prints them.</summary>
public static class ZoneNames
{
    public static string Of(ZoneType z) => z switch
    {
        ZoneType.Dma => "DMA",
        ZoneType.Dma32 => "DMA32",
        ZoneType.Normal => "Normal",
        ZoneType.HighMem => "HighMem",
        ZoneType.Movable => "Movable",
        ZoneType.Device => "Device",
        _ => z.ToString(),
    };

    public static ZoneType Parse(string name) => name.ToLowerInvariant() switch
    {
        "dma" => ZoneType.Dma,
        "dma32" => ZoneType.Dma32,
        "normal" => ZoneType.Normal,
        "highmem" => ZoneType.HighMem,
        "movable" => ZoneType.Movable,
        _ => throw new ArgumentException($"unknown zone '{name}' (DMA, DMA32, Normal, HighMem)"),
    };
}
