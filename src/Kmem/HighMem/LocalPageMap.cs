using Kmem.Physical;

namespace Kmem.HighMem;

/// <summary>
/// kmap_local_page + kunmap_local as a scope, for kernel code that copies a frame's bytes whatever zone the frame is
/// in (swap, writeback, migration, copy_to_user): lowmem frames use their direct-map address at no cost; HIGHMEM frames
/// get a per-CPU fixmap slot for the scope's lifetime. Scopes nest in stack order, as kmap_local requires.
/// </summary>
public readonly unsafe ref struct LocalPageMap
{
    private readonly Highmem? _km;

    /// <summary>Where the frame's 4096 bytes can be read and written during the scope.</summary>
    public byte* Address { get; }

    public Span<byte> Bytes => new(Address, ArchProfile.PageSize);

    private LocalPageMap(Highmem? km, byte* address)
    {
        _km = km;
        Address = address;
    }

    /// <summary>Map <paramref name="page"/> for the scope: page_address for lowmem, kmap_local_page for HIGHMEM.</summary>
    public static LocalPageMap Of(Machine m, PageFrame* page)
    {
        byte* direct = m.MemMap.PageAddress(page);
        if (direct != null) return new LocalPageMap(null, direct);
        var km = m.Vmalloc.Highmem;
        return new LocalPageMap(km, km.KmapLocalPage(page));
    }

    public void Dispose()
    {
        if (_km != null) _km.KunmapLocal(Address);
    }
}
