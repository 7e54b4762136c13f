using Kmem.Tests.Vmalloc;

namespace Kmem.Tests.HighMem;

using Gfp = global::Kmem.Gfp;

public unsafe class KmapTests
{
    private static List<nint> HighPages(Machine m, int n)
    {
        var list = new List<nint>();
        for (int i = 0; i < n; i++)
        {
            PageFrame* p = m.Pages.AllocPages(Gfp.HighUser, 0);
            Assert.True(p->Has(PageFlags.HighMem));
            list.Add((nint)p);
        }
        return list;
    }

    [Fact]
    public void Kmap_SleepsWhenAllSlotsAreTaken_AndWakesOnKunmap()
    {
        using var m = VmallocTests.Boot32();
        var km = m.Vmalloc.Highmem;
        var pages = HighPages(m, Kmem.HighMem.Highmem.LastPkmap + 1);
        var addrs = new HashSet<nint>();
        // LAST_PKMAP - 1 distinct pages fill the window: slot 0 is skipped by the cursor's first step, and reaching the
        // end wraps to it only after a flush; then it is taken too.
        for (int i = 0; i < Kmem.HighMem.Highmem.LastPkmap; i++)
        {
            byte* a = km.Kmap((PageFrame*)pages[i]);
            a[0] = (byte)i;
            Assert.True(addrs.Add((nint)a));
        }
        Assert.Equal(Kmem.HighMem.Highmem.LastPkmap, km.PkmapInUse);
        byte* got = null;
        var sleeper = new Thread(() => got = km.Kmap((PageFrame*)pages[^1]));
        sleeper.Start();
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (km.Waiters == 0 && DateTime.UtcNow < deadline) Thread.Sleep(5);
        Assert.Equal(1, km.Waiters);
        Assert.False(sleeper.Join(200)); // really blocked
        km.Kunmap((PageFrame*)pages[7]);
        Assert.True(sleeper.Join(10_000));
        Assert.True(got != null);
        // The freed slot was flushed (unmapped) and reused for the new page.
        Assert.True(km.PageAddress((PageFrame*)pages[7]) == null);
        got[0] = 0xAB;
        Assert.Equal(0xAB, km.Kmap((PageFrame*)pages[^1])[0]);
        km.Kunmap((PageFrame*)pages[^1]);
        km.Kunmap((PageFrame*)pages[^1]);
        for (int i = 0; i < Kmem.HighMem.Highmem.LastPkmap; i++)
            if (i != 7) km.Kunmap((PageFrame*)pages[i]);
        Assert.Equal(0, km.PkmapInUse);
        Assert.Throws<KmemException>(() => km.Kunmap((PageFrame*)pages[0])); // unbalanced
        foreach (var p in pages) m.Pages.FreePages((PageFrame*)p, 0);
        VmallocTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void KmapLocal_IsStackOrdered_AndAWrongOrderReleaseIsReported()
    {
        using var m = VmallocTests.Boot32();
        var km = m.Vmalloc.Highmem;
        var pages = HighPages(m, 17);
        for (int i = 0; i < pages.Count; i++) m.Vmalloc.Highmem.Kmap((PageFrame*)pages[i])[0] = (byte)(i + 1);
        foreach (var p in pages) km.Kunmap((PageFrame*)p);
        using var pin = Cpu.Pin(1);
        byte* a = km.KmapLocalPage((PageFrame*)pages[0]);
        byte* b = km.KmapAtomic((PageFrame*)pages[1]);
        byte* c = km.KmapLocalPage((PageFrame*)pages[2]);
        Assert.Equal(1, a[0]);
        Assert.Equal(2, b[0]);
        Assert.Equal(3, c[0]);
        ulong fix = m.Physical.ToKernelVirtual(a);
        Assert.InRange(fix, ArchProfile.X86_32_FixaddrStart, 0xfffff000UL - 1);
        var e = Assert.Throws<KmemException>(() => km.KunmapLocal(b + 100));
        Assert.Contains("out of order", e.Report);
        Assert.Equal(3, km.LocalDepth); // nothing changed
        Assert.Equal(2, b[0]);
        km.KunmapLocal(c);
        km.KunmapAtomic(b);
        km.KunmapLocal(a + 4095);
        Assert.Equal(0, km.LocalDepth);
        Assert.StartsWith("---p", VmallocTests.HostMapping((nint)a)); // popped slots are unmapped
        // KM_MAX_IDX = 16 nested mappings, not 17.
        var maps = new List<nint>();
        for (int i = 0; i < 16; i++) maps.Add((nint)km.KmapLocalPage((PageFrame*)pages[i]));
        Assert.Throws<KmemException>(() => km.KmapLocalPage((PageFrame*)pages[16]));
        for (int i = 15; i >= 0; i--) km.KunmapLocal((void*)maps[i]);
        foreach (var p in pages) m.Pages.FreePages((PageFrame*)p, 0);
        VmallocTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void OnX86_64_KmapIsTheDirectMap()
    {
        using var m = VmallocTests.Boot64();
        PageFrame* p = m.Pages.AllocPages(Gfp.HighUser, 0);
        Assert.True(m.Vmalloc.Highmem.Kmap(p) == m.MemMap.PageAddress(p));
        Assert.True(m.Vmalloc.Highmem.KmapLocalPage(p) == m.MemMap.PageAddress(p));
        m.Vmalloc.Highmem.KunmapLocal(m.MemMap.PageAddress(p));
        m.Vmalloc.Highmem.Kunmap(p);
        m.Pages.FreePages(p, 0);
        VmallocTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void LowmemPagesOnX86_32_NeedNoSlot()
    {
        using var m = VmallocTests.Boot32();
        PageFrame* p = m.Pages.AllocPages(Gfp.Kernel, 0);
        Assert.True(m.Vmalloc.Highmem.Kmap(p) == m.MemMap.PageAddress(p));
        Assert.Equal(0, m.Vmalloc.Highmem.PkmapInUse);
        m.Vmalloc.Highmem.Kunmap(p);
        m.Pages.FreePages(p, 0);
        VmallocTests.AssertNothingLeaked(m);
    }
}
