namespace Kmem.Tests.Gfp;

using G = Kmem.Gfp;

public class GfpFormatTests
{
    public static TheoryData<G, string> Rows => new()
    {
        { G.None, "none" },
        { G.Kernel, "GFP_KERNEL" },
        { G.KernelAccount, "GFP_KERNEL_ACCOUNT" },
        { G.KernelAccount | G.Zero, "GFP_KERNEL_ACCOUNT|__GFP_ZERO" },
        { G.Atomic, "GFP_ATOMIC" },
        { G.Atomic | G.NoWarn, "GFP_ATOMIC|__GFP_NOWARN" },
        { G.NoWait, "GFP_NOWAIT" },
        { G.NoWait | G.Zero, "GFP_NOWAIT|__GFP_ZERO" },
        { G.NoWait | G.NoRetry | G.NoMemAlloc, "GFP_NOWAIT|__GFP_NORETRY|__GFP_NOMEMALLOC" },
        { G.NoFs, "GFP_NOFS" },
        { G.NoFs | G.Zero | G.NoFail | G.Account, "GFP_NOFS|__GFP_ZERO|__GFP_NOFAIL|__GFP_ACCOUNT" },
        { G.User, "GFP_USER" },
        { G.HighUser, "GFP_HIGHUSER" },
        { G.HighUserMovable, "GFP_HIGHUSER_MOVABLE" },
        { G.HighUserMovable | G.Comp, "GFP_HIGHUSER_MOVABLE|__GFP_COMP" },
        { G.HighUserMovable | G.Write | G.Comp, "GFP_HIGHUSER_MOVABLE|__GFP_WRITE|__GFP_COMP" },
        { G.TransHugeLight, "GFP_TRANSHUGE_LIGHT" },
        { G.TransHuge, "GFP_TRANSHUGE" },
        { G.GfpDma, "GFP_DMA" },
        { G.GfpDma32, "GFP_DMA32" },
        { G.Kernel | G.Dma, "GFP_KERNEL|GFP_DMA" },
        { G.NoIo, "GFP_NOIO" }, // == __GFP_RECLAIM; GFP_NOIO comes first in the table, so __GFP_RECLAIM never prints
        { G.DirectReclaim, "__GFP_DIRECT_RECLAIM" },
        { G.KswapdReclaim, "__GFP_KSWAPD_RECLAIM" },
        { G.Dma | G.HighMem, "GFP_DMA|__GFP_HIGHMEM" },
        { G.Reclaimable | G.Io | G.NoWarn | G.NoRetry | G.Comp | G.NoMemAlloc,
            "__GFP_RECLAIMABLE|__GFP_IO|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_NOMEMALLOC" },
        { G.Kernel | G.Reclaimable | G.NoWarn | G.NoRetry | G.Comp,
            "GFP_KERNEL|__GFP_RECLAIMABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP" },
        // GFP_NOFS plus HIGHMEM|MOVABLE|HARDWALL is not GFP_HIGHUSER_MOVABLE (no __GFP_FS): greedy takes GFP_NOFS.
        { G.NoFs | G.HighMem | G.Movable | G.NoWarn | G.NoRetry | G.Comp | G.HardWall,
            "GFP_NOFS|__GFP_HIGHMEM|__GFP_MOVABLE|__GFP_NOWARN|__GFP_NORETRY|__GFP_COMP|__GFP_HARDWALL" },
        // Bits without a name are printed last, as one lowercase hex number.
        { (G)0x200, "0x200" },
        { G.Kernel | (G)0x200, "GFP_KERNEL|0x200" },
        { G.NoObjExt, "0x1000000" },
        { G.Kernel | G.NoObjExt | (G)0x200, "GFP_KERNEL|0x1000200" },
        { (G)0xfe000000, "0xfe000000" },
    };

    [Theory]
    [MemberData(nameof(Rows))]
    public void Format_matches_ftrace(G gfp, string expected) => Assert.Equal(expected, GfpFormat.Format(gfp));

    [Theory]
    [MemberData(nameof(Rows))]
    public void TryFormat_matches_Format(G gfp, string expected)
    {
        Span<char> buffer = stackalloc char[GfpFormat.MaxLength];
        Assert.True(GfpFormat.TryFormat(gfp, buffer, out int written));
        Assert.Equal(expected, buffer[..written].ToString());
    }

    [Theory]
    [MemberData(nameof(Rows))]
    public void Parse_inverts_Format(G gfp, string text)
    {
        Assert.Equal(gfp, GfpFormat.Parse(text));
        Assert.True(GfpFormat.TryParse(text, out G parsed));
        Assert.Equal(gfp, parsed);
    }

    [Theory]
    [MemberData(nameof(Rows))]
    public void TryFormat_fails_cleanly_when_one_char_short(G gfp, string expected)
    {
        Span<char> buffer = stackalloc char[expected.Length - 1];
        Assert.False(GfpFormat.TryFormat(gfp, buffer, out int written));
        Assert.Equal(0, written);
    }

    [Fact]
    public void Every_mask_fits_MaxLength_and_round_trips()
    {
        Span<char> buffer = stackalloc char[GfpFormat.MaxLength];
        foreach (uint value in new[] { uint.MaxValue, 0x1ffffffu, 0x0ffffffu, 0xaaaaaaaau, 0x55555555u })
        {
            Assert.True(GfpFormat.TryFormat((G)value, buffer, out int written));
            Assert.Equal((G)value, GfpFormat.Parse(buffer[..written]));
        }

        // Every single bit and every pair of bits.
        for (int i = 0; i < 32; i++)
        {
            for (int j = i; j < 32; j++)
            {
                var gfp = (G)((1u << i) | (1u << j));
                string text = GfpFormat.Format(gfp);
                Assert.Equal(gfp, GfpFormat.Parse(text));
            }
        }
    }

    [Fact]
    public void All_bits_print_composites_then_bits_then_hex()
    {
        // Greedy: GFP_TRANSHUGE claims its bits first, so composites needing __GFP_DIRECT_RECLAIM no longer match;
        // GFP_ATOMIC (__GFP_HIGH|__GFP_KSWAPD_RECLAIM) still does. Unnamed bits (9, 24..31) come last as hex.
        Assert.Equal(
            "GFP_TRANSHUGE|GFP_ATOMIC|GFP_DMA|GFP_DMA32|__GFP_RECLAIMABLE|__GFP_ZERO|__GFP_WRITE|__GFP_RETRY_MAYFAIL"
            + "|__GFP_NOFAIL|__GFP_NORETRY|__GFP_MEMALLOC|__GFP_THISNODE|__GFP_ACCOUNT|__GFP_ZEROTAGS|0xff000200",
            GfpFormat.Format((G)uint.MaxValue));
    }

    [Theory]
    [InlineData("__GFP_DMA", G.Dma)]
    [InlineData("__GFP_DMA32", G.Dma32)]
    [InlineData("__GFP_RECLAIM", G.Reclaim)]
    [InlineData("__GFP_ZERO|GFP_KERNEL", G.Kernel | G.Zero)] // any order
    [InlineData("GFP_KERNEL|GFP_KERNEL", G.Kernel)]
    [InlineData("GFP_USER|__GFP_DIRECT_RECLAIM|__GFP_KSWAPD_RECLAIM|__GFP_IO|__GFP_FS", G.User)]
    [InlineData("0xCC0", G.Kernel)]
    [InlineData("0xffffffff", (G)uint.MaxValue)]
    public void Parse_accepts_non_canonical_forms(string text, G expected) => Assert.Equal(expected, GfpFormat.Parse(text));

    [Theory]
    [InlineData("", "is empty")]
    [InlineData("GFP_KERNEL|GFP_BOGUS", "'GFP_BOGUS'")]
    [InlineData("gfp_kernel", "'gfp_kernel'")] // names are case-sensitive, as the kernel prints them
    [InlineData("GFP_KERNEL|", "empty flag name")]
    [InlineData("|GFP_KERNEL", "empty flag name")]
    [InlineData("GFP_KERNEL||__GFP_ZERO", "empty flag name")]
    [InlineData(" GFP_KERNEL", "' GFP_KERNEL'")]
    [InlineData("0x", "'0x'")]
    [InlineData("0xZZ", "'0xZZ'")]
    [InlineData("0x123456789", "'0x123456789'")]
    [InlineData("none|GFP_KERNEL", "'none'")]
    [InlineData("GFP_KERNEL|none", "'none'")]
    public void Parse_rejects_with_the_bad_token_named(string text, string expectedInMessage)
    {
        FormatException e = Assert.Throws<FormatException>(() => GfpFormat.Parse(text));
        Assert.Contains(expectedInMessage, e.Message, StringComparison.Ordinal);
        Assert.Contains($"'{text}'", e.Message, StringComparison.Ordinal);
        Assert.False(GfpFormat.TryParse(text, out G gfp));
        Assert.Equal(G.None, gfp);
    }

    [Fact]
    public void TryFormat_and_TryParse_do_not_allocate()
    {
        G[] masks =
        [
            G.None, G.Kernel, G.KernelAccount | G.Zero, G.HighUserMovable | G.Write | G.Comp, G.NoWait | G.NoRetry,
            G.Kernel | G.NoObjExt | (G)0x200, (G)uint.MaxValue,
        ];
        string[] texts = Array.ConvertAll(masks, GfpFormat.Format);
        Span<char> buffer = stackalloc char[GfpFormat.MaxLength];

        // Warm up: static table, JIT tiers.
        for (int i = 0; i < 1000; i++)
        {
            GfpFormat.TryFormat(masks[i % masks.Length], buffer, out _);
            GfpFormat.TryParse(texts[i % texts.Length], out _);
        }

        // Up to three measured passes, the first with zero bytes counts: under a loaded test run the tiered JIT can
        // still be installing these methods' optimized code during the first pass, and that runtime work is charged
        // to this thread. Code that allocated would allocate in every pass.
        long allocated = -1;
        int total = 0;
        for (int pass = 0; pass < 3 && allocated != 0; pass++)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            for (int i = 0; i < 100_000; i++)
            {
                GfpFormat.TryFormat(masks[i % masks.Length], buffer, out int written);
                GfpFormat.TryParse(texts[i % texts.Length], out G parsed);
                total += written + (int)((uint)parsed & 1);
            }
            allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        }
        Assert.True(total > 0);
        Assert.Equal(0, allocated);
    }
}
