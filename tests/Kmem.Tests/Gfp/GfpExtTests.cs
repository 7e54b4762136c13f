namespace Kmem.Tests.Gfp;

using G = Kmem.Gfp;

/// <summary>The predicates, per kernel type (the table in Gfp's remarks), and the reserve arithmetic.</summary>
public class GfpExtTests
{
    [Theory]
    //          flags                         block  io     fs     kswapd reserve
    [InlineData(G.Kernel, true, true, true, true, GfpReserve.None)]
    [InlineData(G.KernelAccount, true, true, true, true, GfpReserve.None)]
    [InlineData(G.Atomic, false, false, false, true, GfpReserve.Atomic)]
    [InlineData(G.NoWait, false, false, false, true, GfpReserve.NonBlocking)]
    [InlineData(G.NoIo, true, false, false, true, GfpReserve.None)]
    [InlineData(G.NoFs, true, true, false, true, GfpReserve.None)]
    [InlineData(G.User, true, true, true, true, GfpReserve.None)]
    [InlineData(G.HighUserMovable, true, true, true, true, GfpReserve.None)]
    [InlineData(G.TransHugeLight, false, true, true, false, GfpReserve.None)] // __GFP_NOMEMALLOC: no non-block reserve
    [InlineData(G.TransHuge, true, true, true, false, GfpReserve.None)]
    [InlineData(G.Atomic | G.NoMemAlloc, false, false, false, true, GfpReserve.High)]
    [InlineData(G.Kernel | G.High, true, true, true, true, GfpReserve.High)]
    [InlineData(G.NoWait | G.NoMemAlloc, false, false, false, true, GfpReserve.None)]
    [InlineData(G.None, false, false, false, false, GfpReserve.NonBlocking)]
    public void Predicates(G gfp, bool blocking, bool io, bool fs, bool kswapd, GfpReserve reserve)
    {
        Assert.Equal(blocking, gfp.AllowsBlocking());
        Assert.Equal(!blocking, gfp.IsAtomicLike());
        Assert.Equal(io, gfp.MayIo());
        Assert.Equal(fs, gfp.MayFs());
        Assert.Equal(kswapd, gfp.ShouldWakeKswapd());
        Assert.Equal(reserve, gfp.Reserve());
    }

    [Theory]
    [InlineData(G.None, false)] // alloc_pages_nolock()
    [InlineData(G.NoWait, true)]
    [InlineData(G.TransHugeLight, false)]
    [InlineData(G.TransHuge, true)]
    public void AllowsSpinning(G gfp, bool expected) => Assert.Equal(expected, gfp.AllowsSpinning());

    [Theory]
    [InlineData(GfpReserve.None, 1000L, 1000L)]
    [InlineData(GfpReserve.NonBlocking, 1000L, 1000L)]
    [InlineData(GfpReserve.High, 1000L, 500L)]
    [InlineData(GfpReserve.Atomic, 1000L, 375L)]
    [InlineData(GfpReserve.High, 7L, 4L)]   // 7 - 7/2 = 4: Linux's integer halving
    [InlineData(GfpReserve.Atomic, 7L, 3L)] // 4 - 4/4 = 3
    [InlineData(GfpReserve.Atomic, 0L, 0L)]
    public void ReducedMark(GfpReserve reserve, long mark, long expected) => Assert.Equal(expected, reserve.ReducedMark(mark));

    [Theory]
    [InlineData(GfpReserve.None, false)]
    [InlineData(GfpReserve.NonBlocking, true)]
    [InlineData(GfpReserve.High, true)]
    [InlineData(GfpReserve.Atomic, true)]
    public void CountsHighAtomicAsFree(GfpReserve reserve, bool expected) => Assert.Equal(expected, reserve.CountsHighAtomicAsFree());

    [Theory]
    [InlineData(G.Atomic, 0, false)]
    [InlineData(G.Atomic, 1, true)]
    [InlineData(G.Atomic | G.Comp, 3, true)]
    [InlineData(G.NoWait, 3, false)]              // ALLOC_HIGHATOMIC also needs __GFP_HIGH
    [InlineData(G.Atomic | G.NoMemAlloc, 1, false)]
    [InlineData(G.Kernel | G.High, 1, false)]     // can block
    public void MayUseHighAtomic(G gfp, int order, bool expected) => Assert.Equal(expected, gfp.MayUseHighAtomic(order));

    [Theory]
    [InlineData(G.Kernel, false)]
    [InlineData(G.Kernel | G.MemAlloc, true)]
    [InlineData(G.Atomic | G.MemAlloc, true)]
    [InlineData(G.Kernel | G.MemAlloc | G.NoMemAlloc, false)] // __GFP_NOMEMALLOC wins
    public void MayIgnoreWatermarks(G gfp, bool expected) => Assert.Equal(expected, gfp.MayIgnoreWatermarks());
}
