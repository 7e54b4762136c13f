using Kmem.Slab;
using G = Kmem.Gfp;

namespace Kmem.Tests.Slab;

/// <summary>Every bad free is reported (SLUB-style text naming address, cache and offset), throws, and changes nothing.</summary>
public unsafe class BadFreeTests
{
    private static void AssertStillWorks(Machine m, List<nint> live)
    {
        // Allocate and free more; nothing handed out twice; every live object intact.
        var more = new List<nint>();
        for (int i = 0; i < 500; i++)
        {
            long* p = (long*)m.Slab.Kmalloc(64, G.Kernel);
            *p = i;
            more.Add((nint)p);
        }
        Assert.Equal(more.Count + live.Count, more.Concat(live).Distinct().Count());
        for (int i = 0; i < more.Count; i++) Assert.Equal(i, *(long*)more[i]);
        foreach (var p in more) m.Slab.Kfree((void*)p);
        foreach (var p in live) m.Slab.Kfree((void*)p);
        foreach (var c in m.Slab.Caches) Assert.Null(c.CheckInvariants());
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void ImmediateDoubleFree()
    {
        using var m = SlabTestUtil.Boot();
        using var pin = Cpu.Pin(0);
        void* keep = m.Slab.Kmalloc(64, G.Kernel);
        void* p = m.Slab.Kmalloc(64, G.Kernel);
        m.Slab.Kfree(p);
        var e = Assert.Throws<SlabException>(() => m.Slab.Kfree(p));
        Assert.Contains("BUG kmalloc-64 (Not tainted): Object already free", e.Report);
        Assert.Contains($"Object 0x{m.Physical.ToKernelVirtual(p):x16} @offset=", e.Report);
        Assert.True(m.Log.Contains("Object already free"));
        AssertStillWorks(m, [(nint)keep]);
    }

    [Fact]
    public void DelayedDoubleFreeAndRemoteDoubleFree()
    {
        using var m = SlabTestUtil.Boot();
        var live = new List<nint>();
        void* p;
        using (Cpu.Pin(0))
        {
            p = m.Slab.Kmalloc(64, G.Kernel);
            for (int i = 0; i < 10; i++) live.Add((nint)m.Slab.Kmalloc(64, G.Kernel));
            m.Slab.Kfree(p);
            m.Slab.Kfree((void*)live[3]);
            live.RemoveAt(3);
        }
        Assert.Throws<SlabException>(() => m.Slab.Kfree(p));         // not at the head any more
        using (Cpu.Pin(1)) Assert.Throws<SlabException>(() => m.Slab.Kfree(p)); // from another CPU
        AssertStillWorks(m, live);
    }

    [Fact]
    public void NeverAllocatedObject()
    {
        using var m = SlabTestUtil.Boot();
        void* p = m.Slab.Kmalloc(128, G.Kernel);
        var e = Assert.Throws<SlabException>(() => m.Slab.Kfree((byte*)p + 128 * 5)); // a slot nobody took yet
        Assert.Contains("kmalloc-128", e.Message);
        AssertStillWorks(m, [(nint)p]);
    }

    [Fact]
    public void MiddleOfObject()
    {
        using var m = SlabTestUtil.Boot();
        void* p = m.Slab.Kmalloc(96, G.Kernel);
        var e = Assert.Throws<SlabException>(() => m.Slab.Kfree((byte*)p + 8));
        Assert.Contains("BUG kmalloc-96 (Not tainted): Invalid object pointer", e.Report);
        Assert.Contains("@offset=", e.Report);
        AssertStillWorks(m, [(nint)p]);
    }

    [Fact]
    public void OutsideTheDirectMapAndNotKmalloc()
    {
        using var m = SlabTestUtil.Boot();
        void* p = m.Slab.Kmalloc(32, G.Kernel);
        nint outside = (nint)System.Runtime.InteropServices.NativeMemory.Alloc(64);
        Assert.Throws<SlabException>(() => m.Slab.Kfree((void*)outside));
        System.Runtime.InteropServices.NativeMemory.Free((void*)outside);
        var page = m.Pages.AllocPages(G.Kernel, 0);
        byte* addr = m.MemMap.PageAddress(page);
        var e = Assert.Throws<SlabException>(() => m.Slab.Kfree(addr));
        Assert.Contains("Not a kmalloc allocation", e.Report);
        m.Pages.FreePages(page, 0);
        byte* big = (byte*)m.Slab.Kmalloc(50_000, G.Kernel);
        Assert.Throws<SlabException>(() => m.Slab.Kfree(big + 4096));
        m.Slab.Kfree(big);
        var df = Assert.Throws<SlabException>(() => m.Slab.Kfree(big)); // double free of a large kmalloc
        Assert.Contains("double free", df.Report);
        AssertStillWorks(m, [(nint)p]);
    }

    [Fact]
    public void WrongCache()
    {
        using var m = SlabTestUtil.Boot();
        var a = m.Slab.CreateCache("cache_a", 100, 0, SlabFlags.NoMerge)!;
        var b = m.Slab.CreateCache("cache_b", 100, 0, SlabFlags.NoMerge)!;
        void* x = a.Alloc(G.Kernel);
        var e = Assert.Throws<SlabException>(() => b.Free(x));
        Assert.Contains("Wrong slab cache. cache_b but object is from cache_a", e.Report);
        a.Free(x);
        m.Slab.DestroyCache(a);
        m.Slab.DestroyCache(b);
        AssertStillWorks(m, []);
    }
}
