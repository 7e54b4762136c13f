using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Physical;

/// <summary>
/// The memory map: one <see cref="PageFrame"/> per PFN in native memory, and the conversions Linux spells
/// pfn_to_page, page_to_pfn, virt_to_page, page_address, __pa and __va.
/// </summary>
/// <remarks>
/// Invariants: the array covers PFNs [0, MaxPfn) and lives from boot to dispose; PFNs fit an int (RAM up to
/// 8 TiB). A page's address is <c>WindowBase + pfn * PAGE_SIZE</c> for direct-mapped frames; HIGHMEM frames
/// have none. All conversions are pointer arithmetic.
/// </remarks>
public sealed unsafe class MemMap : IDisposable
{
    private PageFrame* _pages;
    private readonly PhysicalMemory _phys;
    private readonly nuint _bytes;

    public long MaxPfn { get; }
    public PageFrame* Base => _pages;

    public MemMap(PhysicalMemory phys)
    {
        Debug.Assert(sizeof(PageFrame) == 64);
        _phys = phys;
        MaxPfn = phys.MaxPfn;
        nuint bytes = (nuint)MaxPfn * (nuint)sizeof(PageFrame);
        _pages = (PageFrame*)NativeMemory.AlignedAlloc(bytes, 64);
        _bytes = bytes;
        NativeMemory.Clear(_pages, bytes);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* PfnToPage(long pfn) => _pages + pfn;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long PageToPfn(PageFrame* page) => page - _pages;

    public bool IsValidPfn(long pfn) => (ulong)pfn < (ulong)MaxPfn;

    /// <summary>Is <paramref name="page"/> a descriptor of this map (not just any pointer)?</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsValidPage(PageFrame* page)
    {
        // One unsigned compare covers both ends; sizeof(PageFrame) is 64, so alignment is a mask.
        nuint off = (nuint)((byte*)page - (byte*)_pages);
        return off < _bytes && (off & (nuint)(sizeof(PageFrame) - 1)) == 0;
    }

    /// <summary>page_address: the direct-map address, or null for a HIGHMEM frame.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public byte* PageAddress(PageFrame* page)
    {
        long pfn = page - _pages;
        return pfn < _phys.LowmemPfnEnd ? _phys.WindowBase + (nuint)pfn * ArchProfile.PageSize : null;
    }

    /// <summary>virt_to_page for a direct-map address; null outside the direct map.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* VirtToPage(void* addr)
    {
        nuint off = (nuint)((byte*)addr - _phys.WindowBase);
        if (off >= (nuint)_phys.LowmemPfnEnd * ArchProfile.PageSize) return null;
        return _pages + (off >> ArchProfile.PageShift);
    }

    /// <summary>__pa: physical address of a direct-map address.</summary>
    public ulong Pa(void* addr)
    {
        if (!_phys.IsDirectMapped(addr)) throw new ArgumentOutOfRangeException(nameof(addr), $"__pa: {(nint)addr:x} is not in the direct map");
        return (ulong)((byte*)addr - _phys.WindowBase);
    }

    /// <summary>__va: direct-map address of a physical address (lowmem only).</summary>
    public byte* Va(ulong phys)
    {
        if (phys >= (ulong)_phys.LowmemPfnEnd * ArchProfile.PageSize) throw new ArgumentOutOfRangeException(nameof(phys), $"__va: {phys:x} is not lowmem");
        return _phys.WindowBase + (nuint)phys;
    }

    /// <summary>The head page of a compound page (compound_head), or the page itself.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageFrame* CompoundHead(PageFrame* page) => page->Has(PageFlags.Tail) ? _pages + page->CompoundHead : page;

    public void Dispose()
    {
        if (_pages != null)
        {
            NativeMemory.AlignedFree(_pages);
            _pages = null;
        }
    }
}
