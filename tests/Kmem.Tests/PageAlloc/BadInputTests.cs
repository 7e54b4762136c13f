using Kmem.PageAlloc;
using G = Kmem.Gfp;

namespace Kmem.Tests.PageAlloc;

/// <summary>
/// Every bad call: a Linux-style report in the log, a catchable exception, and the free lists exactly as before
/// (invariants hold, free and pcp counts unchanged). Machine: x86_64 DMA 3840 (pfn 0..255 reserved) + DMA32 4096, 1 CPU.
/// </summary>
public unsafe class BadInputTests
{
    private sealed class Fixture : IDisposable
    {
        public readonly Machine M = Boot.X86_64(dma: 3840, dma32: 4096);
        private readonly Cpu.PinScope _pin = Cpu.Pin(0);
        public PageAllocator Pa => M.Pages;
        private (long Free, long Pcp, string Buddy) _before;

        public void Snapshot() => _before = State();
        private (long, long, string) State() => (M.FreePages, Pa.Zones.Sum(z => Pa.PcpPages(z)), Boot.Buddyinfo(M));

        /// <summary>Run a bad call; check exception type, report shape, log, and that nothing moved.</summary>
        public T Expect<T>(Action bad, params string[] fragments) where T : KmemException
        {
            Snapshot();
            long logged = M.Log.Count;
            var ex = Assert.Throws<T>(bad);
            foreach (var f in fragments) Assert.Contains(f, ex.Report);
            Assert.Null(Pa.CheckInvariants());
            Assert.Equal(_before, State());
            Assert.Equal(logged + 1, M.Log.Count);
            Assert.Equal(ex.Report, M.Log.Lines[^1]);
            return ex;
        }

        /// <summary>A bad free's report: bad_page()'s header, then dump_page()'s lines with pfn, flags and order.</summary>
        public BadPageException ExpectBadPage(Action bad, PageFrame* page, int order, string reason)
        {
            long pfn = M.MemMap.PageToPfn(page);
            var ex = Expect<BadPageException>(bad,
                $"pfn:{pfn:x5}", $"pfn:0x{pfn:x}", "flags: 0x", $" order:{order}", $"page dumped because: {reason}");
            Assert.StartsWith("BUG: Bad page state in process ", ex.Report);
            Assert.Equal(Pa.BadPageText(page, order, reason), ex.Report);
            return ex;
        }

        public void Dispose()
        {
            _pin.Dispose();
            M.Dispose();
        }
    }

    [Fact]
    public void OrderAboveMax_OnAlloc()
    {
        using var f = new Fixture();
        var ex = f.Expect<BadPageException>(() => f.Pa.AllocPages(G.Kernel, 11), "order:11", "MAX_PAGE_ORDER", "mode:0xcc0(GFP_KERNEL)");
        Assert.StartsWith("WARNING: alloc_pages: order:11", ex.Report);
        f.Expect<BadPageException>(() => f.Pa.AllocPages(G.Kernel, -1), "order:-1");
    }

    [Fact]
    public void OrderAboveMax_OnFree()
    {
        using var f = new Fixture();
        PageFrame* p = f.Pa.AllocPages(G.Kernel, 0);
        f.ExpectBadPage(() => f.Pa.FreePages(p, 11), p, 11, "order 11 above MAX_PAGE_ORDER");
        f.Pa.FreePages(p, 0); // still a valid allocation
    }

    [Fact]
    public void DoubleFree_Order0_OnPcpList()
    {
        using var f = new Fixture();
        PageFrame* p = f.Pa.AllocPages(G.Kernel, 0);
        f.Pa.FreePages(p, 0);
        Assert.True(p->Has(PageFlags.OnPcp));
        f.ExpectBadPage(() => f.Pa.FreePages(p, 0), p, 0, "freeing a free page (double free)");
    }

    [Fact]
    public void DoubleFree_Order5_OnBuddyList()
    {
        using var f = new Fixture();
        PageFrame* p = f.Pa.AllocPages(G.Kernel, 5);
        PageFrame* keep = f.Pa.AllocPages(G.Kernel, 5); // probably p's buddy; either way p stays a lone free block or merges
        f.Pa.FreePages(p, 5);
        // After the free, p is either a Buddy head itself or inside a merged free block (then its flags are clear and
        // it is not an allocation head). Both are refused.
        string reason = p->Has(PageFlags.Buddy) ? "freeing a free page (double free)" : "freeing a page that is not the first page of an allocation";
        f.ExpectBadPage(() => f.Pa.FreePages(p, 5), p, 5, reason);
        f.Pa.FreePages(keep, 5);
    }

    [Fact]
    public void DoubleFree_Order5_BuddyHead()
    {
        using var f = new Fixture();
        PageFrame* a = f.Pa.AllocPages(G.Kernel, 5);
        PageFrame* b = f.Pa.AllocPages(G.Kernel, 5);
        // a and b are buddies (the second comes from the first split's order-5 remainder), so freeing a alone leaves
        // a Buddy head of order 5 behind.
        Assert.Equal(f.M.MemMap.PageToPfn(a) ^ 32, f.M.MemMap.PageToPfn(b));
        f.Pa.FreePages(a, 5);
        Assert.True(a->Has(PageFlags.Buddy));
        f.ExpectBadPage(() => f.Pa.FreePages(a, 5), a, 5, "freeing a free page (double free)");
        f.Pa.FreePages(b, 5);
    }

    [Fact]
    public void WrongOrder()
    {
        using var f = new Fixture();
        PageFrame* p = f.Pa.AllocPages(G.Kernel, 2);
        f.ExpectBadPage(() => f.Pa.FreePages(p, 1), p, 1, "wrong order: allocated with order:2, freed with order:1");
        f.ExpectBadPage(() => f.Pa.FreePages(p, 3), p, 3, "wrong order: allocated with order:2, freed with order:3");
        f.Pa.FreePages(p, 2);
    }

    [Fact]
    public void TailPage_OfCompound_AndInteriorPage_OfPlainBlock()
    {
        using var f = new Fixture();
        PageFrame* comp = f.Pa.AllocPages(G.Kernel | G.Comp, 2);
        Assert.True((comp + 1)->Has(PageFlags.Tail));
        f.ExpectBadPage(() => f.Pa.FreePages(comp + 1, 0), comp + 1, 0, "freeing a tail page of a compound page");
        PageFrame* plain = f.Pa.AllocPages(G.Kernel, 2);
        f.ExpectBadPage(() => f.Pa.FreePages(plain + 3, 0), plain + 3, 0, "freeing a page that is not the first page of an allocation");
        f.Pa.FreePages(comp, 2);
        f.Pa.FreePages(plain, 2);
    }

    [Fact]
    public void NeverAllocated_AndReserved()
    {
        using var f = new Fixture();
        // pfn 0x1800 lies in DMA32's second MAX_ORDER block, which nobody has touched: a Buddy head.
        PageFrame* free = f.M.MemMap.PfnToPage(0x1800);
        Assert.True(free->Has(PageFlags.Buddy));
        f.ExpectBadPage(() => f.Pa.FreePages(free, 0), free, 0, "freeing a free page (double free)");
        // pfn 0x1801: inside that free block, no state at all.
        f.ExpectBadPage(() => f.Pa.FreePages(free + 1, 0), free + 1, 0, "freeing a page that is not the first page of an allocation");
        // pfn 0x10: below 1 MiB, PG_reserved.
        PageFrame* reserved = f.M.MemMap.PfnToPage(0x10);
        Assert.True(reserved->Has(PageFlags.Reserved));
        var ex = f.ExpectBadPage(() => f.Pa.FreePages(reserved, 0), reserved, 0, "PAGE_FLAGS_CHECK_AT_FREE flag(s) set (reserved page)");
        Assert.Contains("flags: 0x1(reserved) zone:DMA", ex.Report);
    }

    [Fact]
    public void NotADescriptor()
    {
        using var f = new Fixture();
        PageFrame* misaligned = (PageFrame*)((byte*)f.M.MemMap.PfnToPage(0x1400) + 8);
        var ex = f.Expect<BadPageException>(() => f.Pa.FreePages(misaligned, 0), "is not a page descriptor of this machine", "order:0");
        // No descriptor to dump, so bad_page()'s "in process" header is replaced by the address.
        Assert.StartsWith("BUG: Bad page state: ", ex.Report);
        f.Expect<BadPageException>(() => f.Pa.FreePages((PageFrame*)0x1000, 0), "is not a page descriptor");
        byte* stray = (byte*)f.M.Physical.WindowBase + 0x1400 * 4096 + 100; // not page aligned
        f.Expect<BadPageException>(() => f.Pa.FreePages(stray, 0), "is not a page-aligned direct-map address");
    }

    [Theory]
    [InlineData(G.Dma | G.HighMem)]
    [InlineData(G.Dma | G.Dma32)]
    [InlineData(G.Dma32 | G.HighMem | G.Movable)]
    [InlineData(G.Kernel | G.Movable | G.Reclaimable)]
    public void BadGfpCombination(G bits)
    {
        using var f = new Fixture();
        var ex = f.Expect<GfpException>(() => f.Pa.AllocPages(G.Kernel | bits, 0));
        Assert.Equal(G.Kernel | bits, ex.Flags);
        Assert.True(ex.Report.StartsWith("VM_BUG_ON") || ex.Report.StartsWith("WARNING: VM_WARN_ON"), ex.Report);
    }

    [Fact]
    public void AllocationFailure_ReportUnlessNoWarn()
    {
        using var f = new Fixture();
        // Exhaust with NOWARN: no reports.
        long logged = f.M.Log.Count;
        while (f.Pa.AllocPages(G.Kernel | G.NoWarn, 0) != null) { }
        Assert.Equal(logged, f.M.Log.Count);
        // Without it: one warn_alloc report with Linux's header and the free-area summary.
        Assert.True(f.Pa.AllocPages(G.Kernel, 0) == null);
        Assert.Equal(logged + 1, f.M.Log.Count);
        Assert.Contains("page allocation failure: order:0, mode:0xcc0(GFP_KERNEL), nodemask=(null)", f.M.Log.Lines[^1]);
        Assert.Contains("Node 0 DMA32 free:", f.M.Log.Lines[^1]);
        Assert.Null(f.Pa.CheckInvariants());
    }
}
