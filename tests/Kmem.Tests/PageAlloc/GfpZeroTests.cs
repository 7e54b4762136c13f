using Kmem.Physical;
using G = Kmem.Gfp;

namespace Kmem.Tests.PageAlloc;

/// <summary>
/// __GFP_ZERO: every page handed out reads as zero, whether its frame held data before (cleared) or was never handed
/// out since boot (still the memfd's zeros, left untouched so the host never has to fault it in).
/// </summary>
public unsafe class GfpZeroTests
{
    private static bool AllZero(byte* p, int bytes) => new ReadOnlySpan<byte>(p, bytes).IndexOfAnyExcept((byte)0) < 0;

    // Whether the host has memory behind each page of [p, p + pages * 4096) (mincore on the memfd view).
    private static bool[] Resident(byte* p, int pages)
    {
        byte* vec = stackalloc byte[pages];
        Assert.Equal(0, Libc.mincore((nint)p, (nuint)pages * ArchProfile.PageSize, vec));
        var r = new bool[pages];
        for (int i = 0; i < pages; i++) r[i] = (vec[i] & 1) != 0;
        return r;
    }

    [Theory]
    [InlineData(0)]
    [InlineData(3)]
    public void Zeroed_allocation_clears_frames_that_held_data(int order)
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = 2 });
        using var pin = Cpu.Pin(0);
        int bytes = ArchProfile.PageSize << order;
        PageFrame* page = m.Pages.AllocPages(G.Kernel, order);
        byte* p = m.MemMap.PageAddress(page);
        // Dirty only some pages of the block, so that a zeroed block mixes written and untouched frames.
        for (int i = 0; i < 1 << order; i += 2) new Span<byte>(p + i * ArchProfile.PageSize, ArchProfile.PageSize).Fill(0xa5);
        m.Pages.FreePages(page, order);
        // The per-CPU list hands the block straight back (LIFO), so the zeroed allocation gets the dirty frames.
        PageFrame* again = m.Pages.AllocPages(G.Kernel | G.Zero, order);
        Assert.Equal(m.MemMap.PageToPfn(page), m.MemMap.PageToPfn(again));
        Assert.True(AllZero(m.MemMap.PageAddress(again), bytes));
        m.Pages.FreePages(again, order);
    }

    [Fact]
    public void Zeroed_allocation_of_fresh_frames_does_not_touch_them()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = 2 });
        Assert.True(m.Physical.HasMemfd, "this test needs the memfd-backed RAM (Linux)");
        const int Order = 4;
        PageFrame* page = m.Pages.AllocPages(G.Kernel | G.Zero, Order);
        long pfn = m.MemMap.PageToPfn(page);
        byte* p = m.MemMap.PageAddress(page);
        Assert.All(Resident(p, 1 << Order), r => Assert.False(r, "a fresh frame was written to zero it"));
        Assert.True(AllZero(p, ArchProfile.PageSize << Order));
        Assert.False(m.Physical.IsKnownZero(pfn), "a handed-out frame must count as written");
        p[100] = 1;
        m.Pages.FreePages(page, Order);

        // Written since: the next zeroed allocation of those frames clears them.
        using var pin = Cpu.Pin(0);
        PageFrame* a = m.Pages.AllocPages(G.Kernel | G.Zero, 0);
        Assert.True(AllZero(m.MemMap.PageAddress(a), ArchProfile.PageSize));
        m.Pages.FreePages(a, 0);
    }

    [Fact]
    public void Discarded_frames_count_as_zero_again()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = 2 });
        PageFrame* page = m.Pages.AllocPages(G.Kernel, 0);
        long pfn = m.MemMap.PageToPfn(page);
        m.MemMap.PageAddress(page)[0] = 7;
        Assert.False(m.Physical.IsKnownZero(pfn));
        m.Physical.DiscardFrames(pfn, 1);
        Assert.True(m.Physical.IsKnownZero(pfn));
        Assert.Equal(0, m.MemMap.PageAddress(page)[0]);
        m.Pages.FreePages(page, 0);
    }

    [Fact]
    public void Without_memfd_every_frame_counts_as_written()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = 2, ForceNoMemfd = true });
        PageFrame* page = m.Pages.AllocPages(G.Kernel, 2);
        long pfn = m.MemMap.PageToPfn(page);
        Assert.False(m.Physical.IsKnownZero(pfn + 100));
        byte* p = m.MemMap.PageAddress(page);
        new Span<byte>(p, ArchProfile.PageSize << 2).Fill(0x5a);
        m.Pages.FreePages(page, 2);
        using var pin = Cpu.Pin(0);
        PageFrame* z = m.Pages.AllocPages(G.Kernel | G.Zero, 2);
        Assert.True(AllZero(m.MemMap.PageAddress(z), ArchProfile.PageSize << 2));
        m.Pages.FreePages(z, 2);
    }
}
