using Kmem.Diagnostics;
using Kmem.Mm;
using Kmem.Tests.Reclaim;

namespace Kmem.Tests.Mm;

using Gfp = Kmem.Gfp;

public unsafe class ProcessTests
{
    [Fact]
    public void DemandPagingAllocatesOnlyTouchedPages()
    {
        using var m = ReclaimTests.Small();
        m.Reclaim.SwapOn(16384);
        var p = m.Reclaim.CreateProcess("app");
        m.Pages.DrainAllPages();
        long free0 = m.FreePages;
        ulong a = p.Mmap(64L << 20); // twice the machine's RAM: heuristic overcommit allows it (below RAM + swap)
        Assert.Equal(16384, p.TotalVmPages);
        Assert.Equal(0, p.RssPages);
        Assert.Equal(16384, m.CommittedPages);
        long faults0 = m.Stat[VmItem.PgFault];
        for (int i = 0; i < 10; i++) p.Touch(a + (ulong)i * 1000 * 4096);
        Assert.Equal(10, p.RssPages);
        Assert.Equal(10, m.Stat[VmItem.PgFault] - faults0);
        Assert.Equal(10, m.Stat[VmItem.NrAnonPages]);
        m.Pages.DrainAllPages();
        Assert.Equal(10 + p.PageTablePages, free0 - m.FreePages);
        // Zero-filled on first touch.
        var buf = new byte[16];
        p.Read(a + 4096 * 1000, buf);
        Assert.All(buf, b => Assert.Equal(0, b));
        Assert.Contains("VmSize:\t   65536 kB", p.Status());
        Assert.Contains("VmRSS:\t      40 kB", p.Status());
        Assert.Equal("SIGSEGV", Assert.Throws<MmException>(() => p.Touch(0x1000)).Error);
        p.Munmap(a, 64L << 20);
        Assert.Equal(0, p.RssPages);
        ReclaimTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void OvercommitRefusesOnlyTheAbsurd()
    {
        using var m = ReclaimTests.Small();
        var p = m.Reclaim.CreateProcess("greedy");
        Assert.Equal("ENOMEM", Assert.Throws<MmException>(() => p.Mmap(8193L * 4096)).Error);
        p.Mmap(8192L * 4096);
        p.Mmap(8192L * 4096);
        Assert.Equal(16384, m.CommittedPages);
        Assert.Contains("Committed_AS:      65536 kB", Kmem.Proc.ProcViews.Render(m, "meminfo"));
        ReclaimTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void SwapOutAndSwapInKeepTheData()
    {
        using var m = ReclaimTests.Small();
        m.Reclaim.SwapOn(8192);
        var p = m.Reclaim.CreateProcess("db");
        const int pages = 3000;
        ulong a = p.Mmap(pages * 4096L);
        var page = new byte[4096];
        for (int i = 0; i < pages; i++)
        {
            new Random(i).NextBytes(page);
            p.Write(a + (ulong)i * 4096, page);
        }
        // Push the process out: a kernel hog takes memory with GFP_KERNEL; reclaim must swap.
        var held = new List<nint>();
        for (int i = 0; i < 6000; i++)
        {
            PageFrame* k = m.Pages.AllocPages(Gfp.Kernel, 0);
            Assert.True(k != null);
            held.Add((nint)k);
        }
        Assert.True(p.SwapPages > 0, "nothing was swapped out");
        Assert.True(m.Stat[VmItem.PswpOut] > 0);
        // kswapd is a real thread and may still be swapping this process out: the status is read between two counts.
        long before = p.SwapPages;
        string status = p.Status();
        long after = p.SwapPages;
        var vmSwap = System.Text.RegularExpressions.Regex.Match(status, @"^VmSwap:\t *(\d+) kB$", System.Text.RegularExpressions.RegexOptions.Multiline);
        Assert.True(vmSwap.Success, status);
        long kb = long.Parse(vmSwap.Groups[1].Value);
        Assert.InRange(kb, before * 4, after * 4);
        ReclaimTests.FreeAll(m, held);
        var back = new byte[4096];
        for (int i = 0; i < pages; i++)
        {
            new Random(i).NextBytes(page);
            p.Read(a + (ulong)i * 4096, back);
            Assert.True(page.AsSpan().SequenceEqual(back), $"page {i} differs after swap-in");
        }
        Assert.True(m.Stat[VmItem.PswpIn] > 0);
        Assert.True(m.Stat[VmItem.PgMajFault] > 0);
        Assert.Equal(0, p.SwapPages);
        ReclaimTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void X86_32UserAndPageCachePagesLiveInHighmemAndSurviveSwapThroughKmap()
    {
        // 16 MiB DMA (3840 managed) + 24 MiB Normal + 32 MiB HIGHMEM: user pages should come from HIGHMEM first.
        using var m = Machine.Boot(new MachineConfig
        {
            Profile = ArchProfile.X86_32,
            ZoneManagedPages = new Dictionary<ZoneType, long> { [ZoneType.Dma] = 3840, [ZoneType.Normal] = 6144, [ZoneType.HighMem] = 8192 },
        });
        m.Reclaim.SwapOn(16384);
        var p = m.Reclaim.CreateProcess("db");
        const int pages = 4000;
        ulong a = p.Mmap(pages * 4096L);
        var page = new byte[4096];
        for (int i = 0; i < pages; i++)
        {
            new Random(i).NextBytes(page);
            p.Write(a + (ulong)i * 4096, page);
        }
        var high = m.Pages.GetZone(ZoneType.HighMem)!;
        m.Pages.DrainAllPages();
        Assert.True(high.ManagedPages - high.FreePages >= pages * 9 / 10, "user pages did not come from HIGHMEM");
        var file = m.Reclaim.PageCache.CreateFile("log", 2000);
        for (int i = 0; i < 2000; i++) file.Write(i, BitConverter.GetBytes((long)i * 7919));

        // Push everything out with kernel (lowmem) allocations plus more user pages: swap and writeback must copy
        // HIGHMEM frames through kmap_local.
        var q = m.Reclaim.CreateProcess("hog");
        ulong b = q.Mmap(14000 * 4096L);
        for (int i = 0; i < 14000; i++) q.Touch(b + (ulong)i * 4096);
        Assert.True(p.SwapPages > 0, "nothing was swapped out");
        q.Exit();

        var back = new byte[4096];
        for (int i = 0; i < pages; i++)
        {
            new Random(i).NextBytes(page);
            p.Read(a + (ulong)i * 4096, back);
            Assert.True(page.AsSpan().SequenceEqual(back), $"page {i} differs after swap-in");
        }
        var eight = new byte[8];
        for (int i = 0; i < 2000; i++)
        {
            file.Read(i, eight);
            Assert.Equal((long)i * 7919, BitConverter.ToInt64(eight));
        }
        Assert.Equal(0, m.Vmalloc.Highmem.LocalDepth);
        file.Delete();
        p.Exit();
        ReclaimTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void BrkGrowsAndShrinksTheHeap()
    {
        using var m = ReclaimTests.Small();
        var p = m.Reclaim.CreateProcess("sh");
        ulong b0 = p.CurrentBrk;
        Assert.Equal(b0 + 40960, p.Brk(b0 + 40960));
        p.TouchRange(b0, 40960);
        Assert.Equal(10, p.RssPages);
        p.Brk(b0 + 4096);
        Assert.Equal(1, p.RssPages);
        Assert.Equal(1, p.TotalVmPages);
        Assert.Contains("VmHWM:\t      40 kB", p.Status());
        Assert.Contains("VmRSS:\t       4 kB", p.Status());
        Assert.Contains("VmPeak:\t      40 kB", p.Status());
        ReclaimTests.AssertNothingLeaked(m);
    }
}
