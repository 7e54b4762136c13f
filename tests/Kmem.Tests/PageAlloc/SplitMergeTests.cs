using Kmem.Proc;

namespace Kmem.Tests.PageAlloc;

/// <summary>
/// Scripted split/merge sequences with a /proc/buddyinfo snapshot after each step. The machine is one x86_64 zone,
/// DMA32 = 2048 pages (pfn 0x1000..0x1800): two MAX_PAGE_ORDER blocks at pfn 0x1000 and 0x1400. At boot every
/// pageblock is Movable and free blocks are pushed LIFO, so 0x1400 (freed last) heads the order-10 list.
/// Every expected line below was derived by hand from the buddy rules, not copied from a run.
/// </summary>
public unsafe class SplitMergeTests
{
    private const long Base = 0x1000; // DMA32 starts at 16 MiB = pfn 4096

    [Fact]
    public void Order4_4_5_AllocatedThenFreed_SplitsAndCoalescesBack()
    {
        using var m = Boot.X86_64(dma32: 2048);
        using var pin = Cpu.Pin(0);
        var pa = m.Pages;
        // Boot: two order-10 blocks, nothing else.
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2), Boot.Buddyinfo(m));

        // Order 4 > PAGE_ALLOC_COSTLY_ORDER, so the buddy lists serve it directly. GFP_KERNEL is Unmovable and there is
        // no Unmovable block: __rmqueue_claim takes the largest Movable block (0x1400, head of the list), retypes its
        // pageblocks and expand() splits 10 -> 4, leaving one free block at each of orders 4..9.
        PageFrame* a = pa.AllocPages(Kmem.Gfp.Kernel, 4);
        Assert.Equal(Base + 0x400, m.MemMap.PageToPfn(a));
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // The second order-4 request finds the order-4 Unmovable block (a's buddy, pfn 0x1410) exactly.
        PageFrame* b = pa.AllocPages(Kmem.Gfp.Kernel, 4);
        Assert.Equal(Base + 0x410, m.MemMap.PageToPfn(b));
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // Order 5: the order-5 block at 0x1420, exactly.
        PageFrame* c = pa.AllocPages(Kmem.Gfp.Kernel, 5);
        Assert.Equal(Base + 0x420, m.MemMap.PageToPfn(c));
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // Free a (0x1400, order 4): its buddy 0x1410 is allocated, so it stays an order-4 block.
        pa.FreePages(a, 4);
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 1, 0, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // Free b (0x1410): merges with 0x1400 into order 5; that block's buddy 0x1420 (c) is allocated, so it stops.
        pa.FreePages(b, 4);
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // Free c (0x1420, order 5): merges with 0x1400 (5) -> 6, with 0x1440 (6) -> 7, 0x1480 -> 8, 0x1500 -> 9,
        // 0x1600 -> 10. Back to the boot picture.
        pa.FreePages(c, 5);
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2), Boot.Buddyinfo(m));
        Assert.Null(pa.CheckInvariants());
        Assert.Equal(m.TotalRamPages, m.FreePages);
    }

    [Fact]
    public void Order0_ThroughPcpLists_VisibleAfterDrain()
    {
        using var m = Boot.X86_64(dma32: 2048);
        using var pin = Cpu.Pin(0);
        var pa = m.Pages;
        var zone = pa.Zones.Single();
        // zone_batchsize(2048): min(2048 >> 10, 256) / 4 = 0 -> 1; rounddown_pow_of_two(1) - 1 = 0; pcp->batch = max(1, 0) = 1.
        Assert.Equal(1, zone.Pcp[0].Batch);

        // Order 0 goes through the pcp list. It is empty, so rmqueue_bulk moves one batch (1 block) from the buddy
        // lists: the claim takes the order-10 block at 0x1400 and splits it 10 -> 0, one block at every order 0..9
        // (the order-0 one is 0x1401). The refilled page 0x1400 is handed out at once.
        PageFrame* a = pa.AllocPages(Kmem.Gfp.Kernel, 0);
        Assert.Equal(Base + 0x400, m.MemMap.PageToPfn(a));
        Assert.Equal(Boot.Line("DMA32", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));
        Assert.Equal(0, zone.Pcp[0].Count);

        // The second order-0 refill takes 0x1401, the only order-0 block.
        PageFrame* b = pa.AllocPages(Kmem.Gfp.Kernel, 0);
        Assert.Equal(Base + 0x401, m.MemMap.PageToPfn(b));
        Assert.Equal(Boot.Line("DMA32", 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // Freeing a puts it on the pcp list (count 1 < high), so buddyinfo does not move...
        pa.FreePages(a, 0);
        Assert.Equal(1, zone.Pcp[0].Count);
        Assert.Equal(Boot.Line("DMA32", 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));
        // ...until a drain returns it: its buddy 0x1401 (b) is allocated, so it lands as an order-0 block.
        pa.DrainAllPages();
        Assert.Equal(0, zone.Pcp[0].Count);
        Assert.Equal(Boot.Line("DMA32", 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // Free b and drain: 0x1401 merges with 0x1400, then up through every order back to two order-10 blocks.
        pa.FreePages(b, 0);
        pa.DrainAllPages();
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2), Boot.Buddyinfo(m));
        Assert.Null(pa.CheckInvariants());
    }

    [Fact]
    public void Order3_RefillsTwoBlocks_DrainCoalesces()
    {
        using var m = Boot.X86_64(dma32: 2048);
        using var pin = Cpu.Pin(0);
        var pa = m.Pages;
        var zone = pa.Zones.Single();
        // nr_pcp_alloc for order 3 with batch 1: max(1 >> 3, 2) = 2 blocks. The claim splits 0x1400 10 -> 3
        // (blocks left at orders 3..9), then the second block is that order-3 block (0x1408). The first is handed out,
        // the second stays on the pcp list: 8 pages cached.
        PageFrame* a = pa.AllocPages(Kmem.Gfp.Kernel, 3);
        Assert.Equal(Base + 0x400, m.MemMap.PageToPfn(a));
        Assert.Equal(8, zone.Pcp[0].Count);
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // Drain: 0x1408 returns as order 3; its buddy 0x1400 is allocated.
        pa.DrainAllPages();
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));

        // Free a (to the pcp list) and drain: everything coalesces back.
        pa.FreePages(a, 3);
        pa.DrainAllPages();
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2), Boot.Buddyinfo(m));
        Assert.Null(pa.CheckInvariants());
    }

    [Fact]
    public void MovableAllocation_UsesItsOwnListWithoutClaiming()
    {
        using var m = Boot.X86_64(dma32: 2048);
        using var pin = Cpu.Pin(0);
        var pa = m.Pages;
        // GFP_HIGHUSER_MOVABLE order 4: Movable free blocks exist, so __rmqueue_smallest splits 0x1400 directly and the
        // pageblocks stay Movable (pagetypeinfo: 4 Movable blocks, 0 Unmovable).
        PageFrame* a = pa.AllocPages(Kmem.Gfp.HighUserMovable, 4);
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1), Boot.Buddyinfo(m));
        var zone = pa.Zones.Single();
        Assert.Equal(4, zone.PageblockCount(MigrateType.Movable));
        Assert.Equal(0, zone.PageblockCount(MigrateType.Unmovable));
        Assert.Contains("type      Movable      0      0      0      0      1      1      1      1      1      1      1", ProcViews.Pagetypeinfo(m));
        pa.FreePages(a, 4);
        Assert.Equal(Boot.Line("DMA32", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2), Boot.Buddyinfo(m));
    }
}
