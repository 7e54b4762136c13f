using Kmem.Diagnostics;
using Kmem.Slab;
using G = Kmem.Gfp;

namespace Kmem.Tests.Slab;

public unsafe class KmallocTests
{
    [Theory]
    [InlineData(1, 8)] [InlineData(8, 8)] [InlineData(9, 16)] [InlineData(17, 32)] [InlineData(33, 64)]
    [InlineData(65, 96)] [InlineData(96, 96)] [InlineData(97, 128)] [InlineData(129, 192)] [InlineData(192, 192)]
    [InlineData(193, 256)] [InlineData(257, 512)] [InlineData(1000, 1024)] [InlineData(2049, 4096)] [InlineData(8192, 8192)]
    [InlineData(8193, 12288 + 4096)] [InlineData(4 << 20, 4 << 20)]
    public void SizeClasses(int size, int expected)
    {
        using var m = SlabTestUtil.Boot();
        void* p = m.Slab.Kmalloc((nuint)size, G.Kernel);
        Assert.True(p != null);
        Assert.Equal((nuint)expected, m.Slab.Ksize(p));
        Assert.Equal((nuint)expected, SlabAllocator.KmallocSizeRoundup((nuint)size));
        new Span<byte>(p, expected).Fill(0xab);
        m.Slab.Kfree(p);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Theory]
    [InlineData(0x0, "kmalloc-64")]
    [InlineData(0x10, "kmalloc-rcl-64")]      // __GFP_RECLAIMABLE
    [InlineData(0x01, "dma-kmalloc-64")]      // __GFP_DMA
    [InlineData(0x400000, "kmalloc-cg-64")]   // __GFP_ACCOUNT
    [InlineData(0x400011, "dma-kmalloc-64")]  // DMA wins
    [InlineData(0x400010, "kmalloc-rcl-64")]  // RECLAIMABLE beats ACCOUNT
    public void KmallocTypeByGfp(uint extra, string name)
    {
        using var m = SlabTestUtil.Boot();
        Assert.Equal(name, m.Slab.KmallocCache(64, G.Kernel | (G)extra).Name);
    }

    [Fact]
    public void EdgeCases()
    {
        using var m = SlabTestUtil.Boot();
        var s = m.Slab;
        Assert.True(s.Kmalloc(0, G.Kernel) == SlabAllocator.ZeroSizePtr);
        Assert.Equal(16, (nint)SlabAllocator.ZeroSizePtr);
        s.Kfree(null);
        s.Kfree(SlabAllocator.ZeroSizePtr);
        Assert.Equal(0u, (uint)s.Ksize(null));
        Assert.Equal(0u, (uint)s.Ksize(SlabAllocator.ZeroSizePtr));
        // Above KMALLOC_MAX_SIZE: null and a warning.
        Assert.True(s.Kmalloc((4 << 20) + 1, G.Kernel) == null);
        Assert.True(m.Log.Contains("KMALLOC_MAX_SIZE"));
        // kmalloc_array / kcalloc overflow: null, nothing allocated.
        Assert.True(s.KmallocArray(nuint.MaxValue / 2, 3, G.Kernel) == null);
        Assert.True(s.Kcalloc(nuint.MaxValue, 2, G.Kernel) == null);
        Assert.Equal(0, s.SlabPages);
        byte* z = (byte*)s.Kcalloc(10, 10, G.Kernel);
        Assert.Equal(128u, (uint)s.Ksize(z));
        for (int i = 0; i < 100; i++) Assert.Equal(0, z[i]);
        s.Kfree(z);
        // kzalloc zeroes even a reused object.
        byte* a = (byte*)s.Kmalloc(64, G.Kernel);
        new Span<byte>(a, 64).Fill(0xff);
        s.Kfree(a);
        byte* b = (byte*)s.Kzalloc(64, G.Kernel);
        for (int i = 0; i < 64; i++) Assert.Equal(0, b[i]);
        s.Kfree(b);
        // kmalloc_large zeroing and accounting.
        long unrecl = m.Stat[VmItem.NrSlabUnreclaimable];
        byte* big = (byte*)s.Kzalloc(100_000, G.Kernel);
        Assert.Equal(32 * 4096u, (uint)s.Ksize(big));
        Assert.Equal(unrecl + 32, m.Stat[VmItem.NrSlabUnreclaimable]);
        Assert.Equal(0, big[99_999]);
        s.Kfree(big);
        Assert.Equal(unrecl, m.Stat[VmItem.NrSlabUnreclaimable]);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void Krealloc()
    {
        using var m = SlabTestUtil.Boot();
        var s = m.Slab;
        byte* p = (byte*)s.Krealloc(null, 40, G.Kernel);       // = kmalloc
        Assert.Equal(64u, (uint)s.Ksize(p));
        for (int i = 0; i < 40; i++) p[i] = (byte)i;
        Assert.True(s.Krealloc(p, 60, G.Kernel) == p);          // in place within ksize
        byte* q = (byte*)s.Krealloc(p, 20, G.Kernel | G.Zero);   // shrink in place zeroes the spare part
        Assert.True(q == p);
        for (int i = 20; i < 64; i++) Assert.Equal(0, q[i]);
        q = (byte*)s.Krealloc(q, 64, G.Kernel | G.Zero);         // grow in place: the grown part reads zero
        for (int i = 20; i < 64; i++) Assert.Equal(0, q[i]);
        byte* r = (byte*)s.Krealloc(q, 1000, G.Kernel | G.Zero); // moves, contents kept, rest zero
        Assert.True(r != q);
        for (int i = 0; i < 20; i++) Assert.Equal((byte)i, r[i]);
        for (int i = 64; i < 1000; i++) Assert.Equal(0, r[i]);
        byte* big = (byte*)s.Krealloc(r, 20_000, G.Kernel);      // to kmalloc_large
        Assert.Equal((byte)19, big[19]);
        Assert.True(s.Krealloc(big, 0, G.Kernel) == SlabAllocator.ZeroSizePtr); // frees
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void KfreeSensitiveKmemdupKstrdup()
    {
        using var m = SlabTestUtil.Boot();
        var s = m.Slab;
        byte* p = (byte*)s.Kmalloc(32, G.Kernel);
        new Span<byte>(p, 32).Fill(0x5a);
        s.KfreeSensitive(p);
        // The object is free; its bytes (apart from the free pointer word) were zeroed.
        Assert.Equal(0, p[0]);
        Assert.Equal(0, p[31]);
        byte[] src = [1, 2, 3, 4, 5];
        byte* d = (byte*)s.Kmemdup(src, G.Kernel);
        Assert.Equal(src, new Span<byte>(d, 5).ToArray());
        byte* str = s.Kstrdup("hello", G.Kernel);
        Assert.Equal("hello\0", System.Text.Encoding.ASCII.GetString(str, 6));
        byte* str2 = s.Kstrndup(str, 3, G.Kernel);
        Assert.Equal("hel\0", System.Text.Encoding.ASCII.GetString(str2, 4));
        byte* str3 = s.Kstrdup(str, G.Kernel);
        Assert.Equal(8u, (uint)s.Ksize(str3));
        s.Kfree(d); s.Kfree(str); s.Kfree(str2); s.Kfree(str3);
        SlabTestUtil.AssertAllPagesBack(m);
    }
}
