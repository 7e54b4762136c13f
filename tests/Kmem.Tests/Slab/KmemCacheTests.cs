using Kmem.Diagnostics;
using Kmem.Slab;
using G = Kmem.Gfp;

namespace Kmem.Tests.Slab;

public unsafe class KmemCacheTests
{
    [Fact]
    public void ConstructorRunsOncePerObjectPerSlabLifetime()
    {
        using var m = SlabTestUtil.Boot();
        int ctorCalls = 0;
        var c = m.Slab.CreateCache("dentry_like", 192, 0, SlabFlags.ReclaimAccount | SlabFlags.HwcacheAlign, p => { ctorCalls++; *(long*)p = 0x1234; })!;
        Assert.Equal(0, ctorCalls);
        var objs = new List<nint>();
        using (Cpu.Pin(0))
        {
            for (int i = 0; i < 3 * c.ObjectsPerSlab; i++)
            {
                void* p = c.Alloc(G.Kernel);
                Assert.Equal(0x1234, *(long*)p); // constructed state
                objs.Add((nint)p);
            }
            Assert.Equal(3 * c.ObjectsPerSlab, ctorCalls);
            foreach (var p in objs) c.Free((void*)p);
            // Reallocating does not construct again: the objects are still constructed.
            for (int i = 0; i < 3 * c.ObjectsPerSlab; i++) objs[i] = (nint)c.Alloc(G.Kernel);
            Assert.Equal(3 * c.ObjectsPerSlab, ctorCalls);
            foreach (var p in objs) c.Free((void*)p);
        }
        Assert.True(m.Stat[VmItem.NrSlabReclaimable] > 0);
        Assert.Equal(3, c.Shrink());
        Assert.Equal(0, m.Stat[VmItem.NrSlabReclaimable]);
        // New slabs: constructors run again, once per object.
        void* q = c.Alloc(G.Kernel);
        Assert.Equal(4 * c.ObjectsPerSlab, ctorCalls);
        c.Free(q);
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void ShrinkReturnsEmptySlabsAndEmptySlabsBeyondMinPartialAreFreed()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("shrinkme", 256, 0, SlabFlags.NoMerge)!;
        var objs = new List<nint>();
        int slabs = 20;
        for (int i = 0; i < slabs * c.ObjectsPerSlab; i++) objs.Add((nint)c.Alloc(G.Kernel));
        Assert.Equal(slabs, c.NumSlabs);
        long slabPages = m.Stat[VmItem.NrSlabUnreclaimable];
        Assert.Equal(slabs << c.Order, slabPages);
        foreach (var p in objs) c.Free((void*)p);
        // Without shrinking, SLUB keeps at most min_partial empty slabs on the node plus what CPU partial lists hold.
        c.FlushAll();
        Assert.Equal(c.Geometry.MinPartial, c.NumSlabs);
        Assert.Equal(c.Geometry.MinPartial, c.NrPartial);
        Assert.Null(c.CheckInvariants());
        Assert.Equal(c.Geometry.MinPartial, c.Shrink());
        Assert.Equal(0, c.NumSlabs);
        Assert.Equal(0, m.Stat[VmItem.NrSlabUnreclaimable]);
        Assert.Equal(0, c.LiveObjects);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void CompatibleCachesMergeAndTheAliasIsVisible()
    {
        using var m = SlabTestUtil.Boot();
        var a = m.Slab.CreateCache("obj_a", 120)!;
        Assert.Equal(120, a.Size);
        var b = m.Slab.CreateCache("obj_b", 116)!;       // fits a's slot with less than a word of slack, same flags: merges
        Assert.Same(a, b);
        Assert.Contains("obj_b", a.Aliases);
        Assert.Same(a, m.Slab.Aliases["obj_b"]);
        Assert.Same(a, m.Slab.FindCache("obj_b"));
        Assert.Equal(120, a.ObjectSize);
        Assert.Contains("obj_b -> obj_a", m.Slab.AliasInfo());
        Assert.DoesNotContain("obj_b", m.Slab.SlabInfo());
        // Not merged: constructor, SLAB_NO_MERGE, different MERGE_SAME flags, debug flags, too much slack, kmalloc caches.
        Assert.NotSame(a, m.Slab.CreateCache("with_ctor", 120, 0, 0, _ => { }));
        Assert.NotSame(a, m.Slab.CreateCache("nomerge", 120, 0, SlabFlags.NoMerge));
        Assert.NotSame(a, m.Slab.CreateCache("reclaim", 120, 0, SlabFlags.ReclaimAccount));
        Assert.NotSame(a, m.Slab.CreateCache("poisoned", 120, 0, SlabFlags.Poison));
        Assert.NotSame(a, m.Slab.CreateCache("small", 64));
        Assert.DoesNotContain(m.Slab.Caches, c => c.Name.StartsWith("kmalloc-", StringComparison.Ordinal) && c.Aliases.Count > 0);
        m.Slab.DestroyCache(b);                           // drops the alias reference
        Assert.Equal(1, a.Refcount);
        Assert.Empty(m.Slab.Aliases);
    }

    [Fact]
    public void DestroyWithLiveObjectsReportsAndTheCacheStaysUsable()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("leaky", 64, 0, SlabFlags.NoMerge)!;
        void* p = c.Alloc(G.Kernel);
        var e = Assert.Throws<SlabException>(() => m.Slab.DestroyCache(c));
        Assert.Contains("kmem_cache_destroy leaky: Slab cache still has objects", e.Message);
        Assert.True(m.Log.Contains("kmem_cache_destroy leaky: Slab cache still has objects"));
        Assert.Same(c, m.Slab.FindCache("leaky"));
        void* q = c.Alloc(G.Kernel);
        *(long*)q = 42;
        c.Free(q);
        c.Free(p);
        m.Slab.DestroyCache(c);
        Assert.Null(m.Slab.FindCache("leaky"));
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void BulkAllocAndFree()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("bulk", 64, 0, SlabFlags.NoMerge)!;
        Span<nint> objs = stackalloc nint[300];
        Assert.Equal(300, c.AllocBulk(G.Kernel | G.Zero, objs));
        Assert.Equal(300, objs.ToArray().Distinct().Count());
        foreach (var p in objs) Assert.Equal(0, *(long*)p);
        Assert.Equal(300, c.LiveObjects);
        c.FreeBulk(objs);
        Assert.Equal(0, c.LiveObjects);
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void TypesafeByRcuSlabsWaitForAGracePeriod()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("rcu_objs", 512, 0, SlabFlags.TypesafeByRcu)!;
        Assert.True(c.Geometry.FreePointerOutside);
        int token = m.Slab.Rcu.ReadLock();             // a reader that started before the free
        var objs = new List<nint>();
        for (int i = 0; i < c.ObjectsPerSlab; i++) objs.Add((nint)c.Alloc(G.Kernel));
        m.Pages.DrainAllPages();
        long free0 = m.FreePages;
        foreach (var p in objs) c.Free((void*)p);
        c.Shrink();
        Assert.Equal(0, c.NumSlabs);
        // The slab is no longer counted, but its pages are not back while the reader runs.
        m.Pages.DrainAllPages();
        Assert.True(m.FreePages <= free0);
        m.Slab.Rcu.Poll();
        c.Shrink();
        m.Pages.DrainAllPages();
        Assert.True(m.FreePages <= free0);
        m.Slab.Rcu.ReadUnlock(token);
        m.Slab.RcuBarrier();
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void DebugFlagsWriteRedZonesPoisonAndTracks()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("dbg", 64, 0, SlabFlags.RedZone | SlabFlags.Poison | SlabFlags.StoreUser)!;
        byte* p = (byte*)c.Alloc(G.Kernel);
        Assert.Equal(KmemCache.RedActive, p[-1]);              // left red zone
        Assert.Equal(KmemCache.RedActive, p[64]);              // right red zone
        Assert.Equal(KmemCache.PoisonFree, p[0]);              // untouched object still poisoned
        Assert.Equal(KmemCache.PoisonEnd, p[63]);
        Assert.Equal(64u, (uint)m.Slab.Ksize(p));
        new Span<byte>(p, 64).Fill(1);
        c.Free(p);
        Assert.Equal(KmemCache.RedInactive, p[-1]);
        Assert.Equal(KmemCache.PoisonFree, p[10]);
        Assert.Equal(KmemCache.PoisonEnd, p[63]);
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void SlabPanicThrowsAndBadArgumentsReturnNull()
    {
        using var m = SlabTestUtil.Boot();
        Assert.Null(m.Slab.CreateCache("toolarge", 8 << 20));
        Assert.Null(m.Slab.CreateCache("badalign", 64, 3));
        var e = Assert.Throws<SlabException>(() => m.Slab.CreateCache("panicky", 8 << 20, 0, SlabFlags.Panic));
        Assert.Contains("Failed to create slab 'panicky'", e.Report);
    }

    [Fact]
    public void DmaCacheSlabsComeFromZoneDma()
    {
        using var m = SlabTestUtil.Boot();
        void* p = m.Slab.Kmalloc(100, G.Kernel | G.Dma);
        var page = m.MemMap.VirtToPage(p);
        Assert.Equal(ZoneType.Dma, page->Zone);
        Assert.Equal("dma-kmalloc-128", m.Slab.Caches.Single(c => c.NumSlabs > 0).Name);
        m.Slab.Kfree(p);
        SlabTestUtil.AssertAllPagesBack(m);
    }
}
