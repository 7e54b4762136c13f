using Kmem.Vmalloc;

namespace Kmem.Tests.Vmalloc;

using Gfp = global::Kmem.Gfp;

/// <summary>kvmalloc's decisions (Linux 6.18 __kvmalloc_node_noprof), against a recording kmalloc and the real one.</summary>
public unsafe class KvmallocTests
{
    /// <summary>A kmalloc that records the flags it was called with and fails or delegates as told.</summary>
    private sealed class RecordingKmalloc(IKmalloc real) : IKmalloc
    {
        public bool Fail;
        public readonly List<(nuint Size, Gfp Gfp)> Calls = new();
        public void* Kmalloc(nuint size, Gfp gfp)
        {
            Calls.Add((size, gfp));
            return Fail ? null : real.Kmalloc(size, gfp);
        }
        public void Kfree(void* p) => real.Kfree(p);
        public nuint Ksize(void* p) => real.Ksize(p);
        public void* Krealloc(void* p, nuint size, Gfp gfp)
        {
            Calls.Add((size, gfp));
            return Fail ? null : real.Krealloc(p, size, gfp);
        }
    }

    [Fact]
    public void KmallocGfpAdjust_AsLinux618()
    {
        Assert.Equal(Gfp.Kernel, VmallocAllocator.KmallocGfpAdjust(Gfp.Kernel, 4096)); // a page or less: untouched
        Assert.Equal((Gfp.Kernel | Gfp.NoWarn) & ~Gfp.DirectReclaim, VmallocAllocator.KmallocGfpAdjust(Gfp.Kernel, 4097));
        Assert.Equal(Gfp.Kernel | Gfp.RetryMayFail | Gfp.NoWarn, VmallocAllocator.KmallocGfpAdjust(Gfp.Kernel | Gfp.RetryMayFail, 1 << 20));
        Assert.Equal((Gfp.Kernel | Gfp.NoWarn) & ~Gfp.DirectReclaim, VmallocAllocator.KmallocGfpAdjust(Gfp.Kernel | Gfp.NoFail, 1 << 20));
    }

    [Fact]
    public void FallbackRules()
    {
        using var m = VmallocTests.Boot64();
        var vm = m.Vmalloc;
        var rec = new RecordingKmalloc(vm.Kmalloc);
        vm.Kmalloc = rec;

        // kmalloc succeeds: the memory is physically contiguous, not a vmalloc address.
        byte* a = vm.Kvmalloc(64 << 10, Gfp.Kernel);
        Assert.False(vm.IsVmallocAddr(a));
        Assert.Equal((Gfp.Kernel | Gfp.NoWarn) & ~Gfp.DirectReclaim, rec.Calls[^1].Gfp);
        vm.Kvfree(a);

        rec.Fail = true;
        // Above a page, a failed kmalloc falls back to vmalloc when the caller may block.
        byte* b = vm.Kvmalloc(64 << 10, Gfp.Kernel);
        Assert.True(vm.IsVmallocAddr(b));
        Assert.Equal(16, vm.FindVmArea(b)!.Value.NrPages);
        Assert.True((vm.FindVmArea(b)!.Value.Flags & VmFlags.AllowHugeVmap) != 0);
        // ... but not for non-blocking flags (6.18's vmalloc cannot serve them) ...
        Assert.True(vm.Kvmalloc(64 << 10, Gfp.Atomic) == null);
        Assert.True(vm.Kvmalloc(64 << 10, Gfp.NoWait) == null);
        // ... nor at or below a page: "it doesn't really make sense to fallback to vmalloc for sub page requests".
        Assert.True(vm.Kvmalloc(4096, Gfp.Kernel) == null);
        Assert.Equal(Gfp.Kernel, rec.Calls[^1].Gfp);
        // __GFP_RETRY_MAYFAIL keeps direct reclaim for the kmalloc attempt.
        byte* c = vm.Kvzalloc(1 << 20, Gfp.Kernel | Gfp.RetryMayFail);
        Assert.Equal(Gfp.Kernel | Gfp.RetryMayFail | Gfp.NoWarn | Gfp.Zero, rec.Calls[^1].Gfp);
        for (int i = 0; i < 1 << 20; i += 4096) Assert.Equal(0, c[i]);
        // Overflowing kvcalloc fails without allocating.
        int before = rec.Calls.Count;
        Assert.True(vm.Kvcalloc(nuint.MaxValue / 2, 4, Gfp.Kernel) == null);
        Assert.Equal(before, rec.Calls.Count);
        // kvfree picks vfree for vmalloc addresses.
        vm.Kvfree(b);
        vm.Kvfree(c);
        vm.Kvfree(null);
        VmallocTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void RealFallback_WhenContiguousMemoryIsGone()
    {
        // Fragment a small machine so no order-4 block is left, then kvmalloc 64 KiB: kmalloc (order 4) fails, vmalloc serves it.
        using var m = VmallocTests.Boot64(64L << 20);
        var held = new List<nint>();
        var all = new List<nint>();
        PageFrame* pg;
        // No direct reclaim: just take every page, reserves included.
        while ((pg = m.Pages.AllocPages(Gfp.Atomic | Gfp.MemAlloc | Gfp.NoWarn, 0)) != null) all.Add((nint)pg);
        all.Sort();
        for (int i = 0; i < all.Count; i++)
            if (i % 2 == 0) held.Add(all[i]); else m.Pages.FreePages((PageFrame*)all[i], 0);
        byte* p = m.Vmalloc.Kvmalloc(64 << 10, Gfp.Kernel);
        Assert.True(p != null);
        Assert.True(m.Vmalloc.IsVmallocAddr(p));
        p[65535] = 1;
        byte* q = m.Vmalloc.Kvrealloc(p, 128 << 10, Gfp.Kernel);
        Assert.Equal(1, q[65535]);
        m.Vmalloc.Kvfree(q);
        foreach (var h in held) m.Pages.FreePages((PageFrame*)h, 0);
        VmallocTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void Kvrealloc_GrowsAKmallocBlockAndKeepsItsBytes()
    {
        using var m = VmallocTests.Boot64();
        var vm = m.Vmalloc;
        byte* p = vm.Kvmalloc(100, Gfp.Kernel);
        p[99] = 42;
        byte* q = vm.Kvrealloc(p, 3 * 4096, Gfp.Kernel);
        Assert.Equal(42, q[99]);
        Assert.False(vm.IsVmallocAddr(q));
        byte* z = vm.Kvrealloc(q, 0, Gfp.Kernel);
        Assert.True(KvConst.IsZeroOrNull(z));
        vm.Kvfree(z);
        VmallocTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void Nommu_FallbackBlockIsFreedByKvfree()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 128L << 20, ForceNoMemfd = true });
        var rec = new RecordingKmalloc(m.Vmalloc.Kmalloc) { Fail = true };
        m.Vmalloc.Kmalloc = rec;
        byte* p = m.Vmalloc.Kvmalloc(64 << 10, Gfp.Kernel);
        Assert.True(p != null);
        Assert.False(m.Vmalloc.IsVmallocAddr(p)); // NOMMU: is_vmalloc_addr is always false
        Assert.Equal(16, m.Vmalloc.NrVmallocPages);
        m.Vmalloc.Kvfree(p);
        VmallocTests.AssertNothingLeaked(m);
    }
}
