namespace Kmem;

/// <summary>Which architecture a machine imitates: it fixes the zone boundaries and the kernel's virtual layout.</summary>
public enum Arch
{
    /// <summary>x86-64: ZONE_DMA below 16 MiB, ZONE_DMA32 below 4 GiB, ZONE_NORMAL above; all RAM direct-mapped.</summary>
    X86_64,
    /// <summary>x86 32-bit with the 3G/1G split: lowmem up to MAXMEM is direct-mapped, the rest is HIGHMEM.</summary>
    X86_32,
}

/// <summary>
/// The numbers an architecture fixes. All addresses here are the profile's <em>kernel virtual</em> addresses,
/// the ones Linux would print; <see cref="Physical.PhysicalMemory"/> maps them onto the host window.
/// </summary>
/// <remarks>
/// x86_32 layout (non-PAE, 2-level paging, PMD = 4 MiB), top down, derived as arch/x86/include/asm/pgtable_32_areas.h does:
/// <list type="bullet">
/// <item>FIXADDR_START = 0xfff16000: a typical defconfig's fixmap (932 kB below FIXADDR_TOP 0xfffff000). A guess at one
/// config, labelled as such; it only moves PKMAP_BASE through the PMD rounding below.</item>
/// <item>PKMAP_BASE = (FIXADDR_START - PAGE_SIZE * (LAST_PKMAP + 1)) &amp; PMD_MASK = 0xff800000, LAST_PKMAP = 1024.</item>
/// <item>VMALLOC_END = PKMAP_BASE - 2 * PAGE_SIZE = 0xff7fe000.</item>
/// <item>MAXMEM = VMALLOC_END - PAGE_OFFSET - __VMALLOC_RESERVE; with the default 128 MiB reserve that is
/// 0x377fe000 (about 888 MiB; the folklore "896 MB" is 1 GiB - 128 MiB before the pkmap/fixmap holes).</item>
/// <item>VMALLOC_START = high_memory + VMALLOC_OFFSET (8 MiB), so a machine with less RAM than MAXMEM gets a larger vmalloc area.</item>
/// </list>
/// </remarks>
public sealed class ArchProfile
{
    public const int PageShift = 12;
    public const int PageSize = 1 << PageShift;

    public Arch Arch { get; }
    public string Name { get; }

    /// <summary>PAGE_OFFSET: where the direct map of physical address 0 starts.</summary>
    public ulong PageOffset { get; }

    /// <summary>The zones this architecture has, lowest first.</summary>
    public IReadOnlyList<ZoneType> Zones { get; }

    /// <summary>All zones Linux lists for this configuration (for zoneinfo/lowmem_reserve_ratio), including the empty Movable (and Device on x86_64).</summary>
    public IReadOnlyList<ZoneType> AllZones { get; }

    /// <summary>Exclusive upper physical PFN bound of ZONE_DMA (16 MiB).</summary>
    public const long DmaPfnLimit = (16L << 20) >> PageShift;
    /// <summary>Exclusive upper physical PFN bound of ZONE_DMA32 (4 GiB).</summary>
    public const long Dma32PfnLimit = (4L << 30) >> PageShift;

    /// <summary>Bits shown when printing a kernel address: 8 hex digits on x86_32, 16 on x86_64.</summary>
    public int AddressHexDigits => Arch == Arch.X86_32 ? 8 : 16;

    // --- x86_32 fixed layout (see remarks).
    public const ulong X86_32_FixaddrStart = 0xfff16000;
    public const int LastPkmap = 1024;
    public const ulong X86_32_PkmapBase = 0xff800000;
    public const ulong X86_32_VmallocEnd = X86_32_PkmapBase - 2 * PageSize;
    public const ulong X86_32_VmallocOffset = 8UL << 20;
    public const ulong DefaultX86_32VmallocReserve = 128UL << 20;

    // --- x86_64 (4-level paging): the direct map starts at 0xffff888000000000 and vmalloc at 0xffffc90000000000.
    public const ulong X86_64_PageOffset = 0xffff888000000000;
    public const ulong X86_64_VmallocStart = 0xffffc90000000000;
    /// <summary>
    /// Default vmalloc window on x86_64. Linux reserves 32 TiB; kmem reserves host address space for the whole
    /// window, and tests boot many machines at once, so the default is 16 GiB (configurable with --vmalloc).
    /// </summary>
    public const ulong DefaultX86_64VmallocSize = 16UL << 30;

    private ArchProfile(Arch arch)
    {
        Arch = arch;
        if (arch == Arch.X86_64)
        {
            Name = "x86_64";
            PageOffset = X86_64_PageOffset;
            Zones = [ZoneType.Dma, ZoneType.Dma32, ZoneType.Normal];
            AllZones = [ZoneType.Dma, ZoneType.Dma32, ZoneType.Normal, ZoneType.Movable, ZoneType.Device];
        }
        else
        {
            Name = "x86_32";
            PageOffset = 0xC0000000;
            Zones = [ZoneType.Dma, ZoneType.Normal, ZoneType.HighMem];
            AllZones = [ZoneType.Dma, ZoneType.Normal, ZoneType.HighMem, ZoneType.Movable];
        }
    }

    public static ArchProfile X86_64 { get; } = new(Arch.X86_64);
    public static ArchProfile X86_32 { get; } = new(Arch.X86_32);

    public static ArchProfile Parse(string name) => name.ToLowerInvariant() switch
    {
        "x86_64" or "x86-64" or "amd64" => X86_64,
        "x86_32" or "x86-32" or "i386" or "x86" => X86_32,
        _ => throw new ArgumentException($"unknown profile '{name}' (expected x86_64 or x86_32)"),
    };

    /// <summary>Does this profile have the zone?</summary>
    public bool Has(ZoneType z) => Zones.Contains(z);

    /// <summary>
    /// MAXMEM on x86_32: the most physical memory that can be direct-mapped, given the vmalloc reserve.
    /// On x86_64 everything is direct-mapped, so this is unlimited.
    /// </summary>
    public ulong MaxLowmemBytes(ulong vmallocReserve) => Arch == Arch.X86_32
        ? X86_32_VmallocEnd - PageOffset - vmallocReserve
        : ulong.MaxValue;

    public override string ToString() => Name;
}
