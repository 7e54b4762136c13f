namespace Kmem.Tests.Gfp;

/// <summary>The enum's bits and composites against the values of Linux 6.18's gfp_types.h on the traced config.</summary>
public class GfpTests
{
    [Theory]
    // Single bits (___GFP_*_BIT enum order; 0x200 is ___GFP_UNUSED_BIT).
    [InlineData(nameof(Kmem.Gfp.Dma), 0x01u)]
    [InlineData(nameof(Kmem.Gfp.HighMem), 0x02u)]
    [InlineData(nameof(Kmem.Gfp.Dma32), 0x04u)]
    [InlineData(nameof(Kmem.Gfp.Movable), 0x08u)]
    [InlineData(nameof(Kmem.Gfp.Reclaimable), 0x10u)]
    [InlineData(nameof(Kmem.Gfp.High), 0x20u)]
    [InlineData(nameof(Kmem.Gfp.Io), 0x40u)]
    [InlineData(nameof(Kmem.Gfp.Fs), 0x80u)]
    [InlineData(nameof(Kmem.Gfp.Zero), 0x100u)]
    [InlineData(nameof(Kmem.Gfp.DirectReclaim), 0x400u)]
    [InlineData(nameof(Kmem.Gfp.KswapdReclaim), 0x800u)]
    [InlineData(nameof(Kmem.Gfp.Write), 0x1000u)]
    [InlineData(nameof(Kmem.Gfp.NoWarn), 0x2000u)]
    [InlineData(nameof(Kmem.Gfp.RetryMayFail), 0x4000u)]
    [InlineData(nameof(Kmem.Gfp.NoFail), 0x8000u)]
    [InlineData(nameof(Kmem.Gfp.NoRetry), 0x10000u)]
    [InlineData(nameof(Kmem.Gfp.MemAlloc), 0x20000u)]
    [InlineData(nameof(Kmem.Gfp.Comp), 0x40000u)]
    [InlineData(nameof(Kmem.Gfp.NoMemAlloc), 0x80000u)]
    [InlineData(nameof(Kmem.Gfp.HardWall), 0x100000u)]
    [InlineData(nameof(Kmem.Gfp.ThisNode), 0x200000u)]
    [InlineData(nameof(Kmem.Gfp.Account), 0x400000u)]
    [InlineData(nameof(Kmem.Gfp.ZeroTags), 0x800000u)]
    [InlineData(nameof(Kmem.Gfp.NoObjExt), 0x1000000u)] // no KASAN_HW_TAGS, no LOCKDEP: first free bit is 24
    // Composites, with the hex values the kernel prints in mode:%#x reports.
    [InlineData(nameof(Kmem.Gfp.Reclaim), 0xc00u)]
    [InlineData(nameof(Kmem.Gfp.Atomic), 0x820u)]
    [InlineData(nameof(Kmem.Gfp.Kernel), 0xcc0u)]
    [InlineData(nameof(Kmem.Gfp.KernelAccount), 0x400cc0u)]
    [InlineData(nameof(Kmem.Gfp.NoWait), 0x2800u)] // includes __GFP_NOWARN in recent kernels
    [InlineData(nameof(Kmem.Gfp.NoIo), 0xc00u)]
    [InlineData(nameof(Kmem.Gfp.NoFs), 0xc40u)]
    [InlineData(nameof(Kmem.Gfp.User), 0x100cc0u)]
    [InlineData(nameof(Kmem.Gfp.GfpDma), 0x01u)]
    [InlineData(nameof(Kmem.Gfp.GfpDma32), 0x04u)]
    [InlineData(nameof(Kmem.Gfp.HighUser), 0x100cc2u)]
    [InlineData(nameof(Kmem.Gfp.HighUserMovable), 0x100ccau)] // __GFP_SKIP_KASAN is 0 here
    [InlineData(nameof(Kmem.Gfp.TransHugeLight), 0x1c20cau)]
    [InlineData(nameof(Kmem.Gfp.TransHuge), 0x1c24cau)]
    public void Value_matches_linux(string member, uint expected) =>
        Assert.Equal(expected, (uint)Enum.Parse<Kmem.Gfp>(member));
}
