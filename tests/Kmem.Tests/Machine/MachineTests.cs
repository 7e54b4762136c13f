using Kmem.Proc;
using G = Kmem.Gfp;

namespace Kmem.Tests.Machines;



public unsafe class X86_32Tests
{
    // DMA 3840 + Normal 8192 lowmem pages, HighMem 4096 pages above MAXMEM (pfn 0x377fe).
    private static Machine Boot() => Kmem.Tests.PageAlloc.Boot.Detached(Machine.Boot(new MachineConfig
    {
        Profile = ArchProfile.X86_32,
        Cpus = 1,
        ZoneManagedPages = new Dictionary<ZoneType, long> { [ZoneType.Dma] = 3840, [ZoneType.Normal] = 8192, [ZoneType.HighMem] = 4096 },
    }));

    [Fact]
    public void HighmemPages_HaveNoDirectMapping_LowmemPagesDo()
    {
        using var m = Boot();
        using var pin = Cpu.Pin(0);
        var pa = m.Pages;
        PageFrame* high = pa.AllocPages(G.HighUser, 0);
        Assert.Equal(ZoneType.HighMem, high->Zone);
        Assert.True(high->Has(PageFlags.HighMem));
        Assert.True(m.MemMap.PageAddress(high) == null);
        Assert.True(m.MemMap.PageToPfn(high) >= m.Layout.LowmemPfnEnd);

        PageFrame* low = pa.AllocPages(G.Kernel, 0);
        Assert.Equal(ZoneType.Normal, low->Zone);
        byte* a = m.MemMap.PageAddress(low);
        Assert.True(a != null);
        new Span<byte>(a, 4096).Fill(0x5a);
        Assert.Equal(0x5a, a[4095]);
        Assert.True(m.MemMap.VirtToPage(a) == low);
        // The address users see is 0xC0000000-based.
        Assert.Equal(0xC0000000UL + (ulong)m.MemMap.PageToPfn(low) * 4096, m.Physical.ToKernelVirtual(a));
        // __get_free_pages refuses __GFP_HIGHMEM: such pages have no address to return.
        Assert.Throws<GfpException>(() => pa.GetFreePages(G.HighUser, 0));
        pa.FreePages(high, 0);
        pa.FreePages(low, 0);
    }

    [Fact]
    public void GfpKernel_NeverHighmem_GfpHighuser_PrefersIt()
    {
        using var m = Boot();
        using var pin = Cpu.Pin(0);
        var pa = m.Pages;
        var got = new List<nint>();
        PageFrame* p;
        while ((p = pa.AllocPages(G.Kernel | G.NoWarn, 0)) != null)
        {
            Assert.NotEqual(ZoneType.HighMem, p->Zone);
            got.Add((nint)p);
        }
        var high = pa.GetZone(ZoneType.HighMem)!;
        Assert.Equal(high.ManagedPages, high.FreePages);
        // GFP_HIGHUSER still succeeds: from HighMem, the top of its zonelist.
        p = pa.AllocPages(G.HighUser, 0);
        Assert.Equal(ZoneType.HighMem, p->Zone);
        pa.FreePages(p, 0);
        foreach (var q in got) pa.FreePages((PageFrame*)q, 0);
        pa.DrainAllPages();
        Assert.Equal(m.TotalRamPages, m.FreePages);
    }

    [Fact]
    public void Meminfo_HighAndLowTotals()
    {
        using var m = Boot();
        string mi = ProcViews.Meminfo(m);
        Assert.Contains($"{"HighTotal:",-16}{4096 * 4,8} kB\n", mi);
        Assert.Contains($"{"HighFree:",-16}{4096 * 4,8} kB\n", mi);
        Assert.Contains($"{"LowTotal:",-16}{(3840 + 8192) * 4,8} kB\n", mi);
        Assert.Contains($"{"MemTotal:",-16}{(3840 + 8192 + 4096) * 4,8} kB\n", mi);
        // x86_64 has no High*/Low* lines.
        using var m64 = Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = 1 });
        Assert.DoesNotContain("HighTotal", ProcViews.Meminfo(m64));
    }
}

public unsafe class NoMmuTests
{
    [Fact]
    public void WithoutMemfd_BootsAllocatesAndWritesThrough()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = 1, ForceNoMemfd = true });
        using var pin = Cpu.Pin(0);
        Assert.False(m.Physical.HasMemfd);
        var pa = m.Pages;
        byte* a = pa.GetZeroedPage(G.Kernel);
        Assert.True(a != null);
        Assert.All(new Span<byte>(a, 4096).ToArray(), b => Assert.Equal(0, b));
        a[0] = 1;
        a[4095] = 2;
        pa.FreePages(a, 0);
        PageFrame* big = pa.AllocPages(G.Kernel | G.Zero, 10);
        byte* b = m.MemMap.PageAddress(big);
        new Span<byte>(b, 4 << 20).Fill(7);
        pa.FreePages(big, 10);
        pa.DrainAllPages();
        Assert.Null(pa.CheckInvariants());
        Assert.Equal(m.TotalRamPages, m.FreePages);
    }
}
