using Kmem.Slab;
using G = Kmem.Gfp;

namespace Kmem.Tests.Slab;

/// <summary>Per-thread sheaves: remote drain, thread-exit flush, cross-thread frees, double frees through a sheaf.</summary>
public unsafe class SheafTests
{
    private static void RunOnThread(Action a)
    {
        Exception? failure = null;
        var t = new Thread(() => { try { a(); } catch (Exception e) { failure = e; } });
        t.Start();
        t.Join();
        if (failure != null) throw new Xunit.Sdk.XunitException($"thread failed: {failure}");
    }

    [Fact]
    public void FreedObjectsWaitInTheSheafAndFlushAllDrainsThem()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("sheafy", 64, 0, SlabFlags.NoMerge)!;
        Assert.True(c.HasSheaves);
        var objs = new List<nint>();
        for (int i = 0; i < 10; i++) objs.Add((nint)c.Alloc(G.Kernel));
        foreach (var p in objs) c.Free((void*)p);
        Assert.True(c.SheafObjects >= 10);
        Assert.Equal(0, c.LiveObjects);
        // The most recently freed object comes back first (LIFO, cache-hot).
        Assert.Equal(objs[^1], (nint)c.Alloc(G.Kernel));
        c.Free((void*)objs[^1]);
        c.FlushAll();
        Assert.Equal(0, c.SheafObjects);
        Assert.Null(c.CheckInvariants());
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void DebugCachesHaveNoSheaves()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("poisoned", 64, 0, SlabFlags.Poison | SlabFlags.RedZone)!;
        Assert.False(c.HasSheaves);
        void* p = c.Alloc(G.Kernel);
        c.Free(p);
        Assert.Equal(0, c.SheafObjects);
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void ThreadExitGivesTheSheafBack()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("exiting", 128, 0, SlabFlags.NoMerge)!;
        RunOnThread(() =>
        {
            var objs = new nint[20];
            for (int i = 0; i < objs.Length; i++) objs[i] = (nint)c.Alloc(G.Kernel);
            foreach (var p in objs) c.Free((void*)p);
            Assert.True(c.SheafObjects >= 20);
        });
        // No drain: only the exited thread's finalized table owner can have returned the objects.
        for (int i = 0; i < 50 && c.SheafObjects != 0; i++)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
        }
        Assert.Equal(0, c.SheafObjects);
        Assert.Equal(0, c.LiveObjects);
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void ShrinkDrainsTheSheafOfALiveParkedThread()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("parked", 64, 0, SlabFlags.NoMerge)!;
        var objs = new List<nint>();
        for (int i = 0; i < 25; i++) objs.Add((nint)c.Alloc(G.Kernel));
        using var freed = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        // Cross-thread frees: objects allocated here are freed by another thread (into its sheaf), which stays alive.
        var t = new Thread(() =>
        {
            foreach (var p in objs) c.Free((void*)p);
            freed.Set();
            release.Wait();
            void* q = c.Alloc(G.Kernel); // its sheaf still works after a remote drain
            c.Free(q);
        });
        t.Start();
        freed.Wait();
        Assert.True(c.SheafObjects >= 20);
        Assert.Equal(0, c.LiveObjects);
        c.Shrink();
        Assert.Equal(0, c.SheafObjects);
        Assert.Equal(0, c.NumSlabs);
        release.Set();
        t.Join();
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void DoubleFreeOfAnObjectInASheafIsCaughtHereAndFromAnotherThread()
    {
        using var m = SlabTestUtil.Boot();
        void* keep = m.Slab.Kmalloc(64, G.Kernel);
        void* p = m.Slab.Kmalloc(64, G.Kernel);
        var others = new List<nint>();
        for (int i = 0; i < 5; i++) others.Add((nint)m.Slab.Kmalloc(64, G.Kernel));
        m.Slab.Kfree(p);
        foreach (var o in others) m.Slab.Kfree((void*)o); // p is no longer the most recent free
        var e = Assert.Throws<SlabException>(() => m.Slab.Kfree(p));
        Assert.Contains("BUG kmalloc-64 (Not tainted): Object already free", e.Report);
        // Into the sheaf again, then freed a second time by a thread that does not hold it.
        p = m.Slab.Kmalloc(64, G.Kernel);
        m.Slab.Kfree(p);
        SlabException? remote = null;
        RunOnThread(() => remote = Assert.Throws<SlabException>(() => m.Slab.Kfree(p)));
        Assert.Contains("Object already free", remote!.Report);
        // Bulk free with a duplicate inside the batch.
        var c = m.Slab.CreateCache("bulkdup", 64, 0, SlabFlags.NoMerge)!;
        Span<nint> batch = stackalloc nint[4];
        Assert.Equal(4, c.AllocBulk(G.Kernel, batch));
        nint[] dup = [batch[0], batch[1], batch[0]];
        Assert.Throws<SlabException>(() => c.FreeBulk(dup));
        c.FreeBulk(batch[2..]);
        Assert.Equal(0, c.LiveObjects);
        m.Slab.Kfree(keep);
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void BulkFreeStopsAtABadPointerHavingFreedTheObjectsBeforeIt()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("bulkbad", 48, 0, SlabFlags.NoMerge)!;
        var other = m.Slab.CreateCache("bulkother", 48, 0, SlabFlags.NoMerge)!;
        // More than a slab's worth, so the batch crosses slabs and overflows the sheaf on its way.
        var objs = new nint[3 * c.ObjectsPerSlab];
        Assert.Equal(objs.Length, c.AllocBulk(G.Kernel, objs));
        nint foreign = (nint)other.Alloc(G.Kernel);

        // A pointer into the middle of an object: the objects before it are freed, it and those after are not.
        int cut = objs.Length / 2;
        nint[] withMiddle = [.. objs[..cut], objs[cut] + 8, .. objs[cut..]];
        var e = Assert.Throws<SlabException>(() => c.FreeBulk(withMiddle));
        Assert.Contains("Invalid object pointer", e.Report);
        Assert.Equal(objs.Length - cut, c.LiveObjects);

        // An object of another cache is refused, and nothing of the batch after it was taken.
        nint[] withForeign = [objs[cut], foreign, objs[cut + 1]];
        Assert.Throws<SlabException>(() => c.FreeBulk(withForeign));
        Assert.Equal(objs.Length - cut - 1, c.LiveObjects);
        Assert.Equal(1, other.LiveObjects);

        c.FreeBulk(objs.AsSpan(cut + 1));
        Assert.Equal(0, c.LiveObjects);
        other.Free((void*)foreign);
        m.Slab.DestroyCache(c);
        m.Slab.DestroyCache(other);
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void DrainsRacingWithAnOwnerLoseNothing()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("racing", 64, 0, SlabFlags.NoMerge)!;
        const int Live = 100;
        bool stop = false;
        var t = new Thread(() =>
        {
            long tag = 0x5a5a_0000_0000;
            nint* live = stackalloc nint[Live];
            for (int i = 0; i < Live; i++) { live[i] = (nint)c.Alloc(G.Kernel); *(long*)live[i] = tag + i; }
            for (long n = 0; !Volatile.Read(ref stop); n++)
            {
                int i = (int)(n % Live);
                if (*(long*)live[i] != tag + i) throw new InvalidOperationException($"object {i} overwritten");
                c.Free((void*)live[i]);
                live[i] = (nint)c.Alloc(G.Kernel);
                *(long*)live[i] = tag + i;
            }
            for (int i = 0; i < Live; i++) c.Free((void*)live[i]);
        });
        t.Start();
        // At least 200 drains, and on a multi-core machine more until a drain has had to re-claim a sheaf whose
        // stop bit the owner's closing window undid (ThreadSheaves.Claim's retry), so that path is raced too.
        long retriesBefore = ThreadSheaves.ClaimRetries;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        for (int i = 0; i < 200 || Environment.ProcessorCount > 1 && ThreadSheaves.ClaimRetries == retriesBefore && clock.Elapsed.TotalSeconds < 10; i++)
        {
            c.FlushAll();
            _ = c.LiveObjects;
        }
        Volatile.Write(ref stop, true);
        t.Join();
        if (Environment.ProcessorCount > 1) Assert.True(ThreadSheaves.ClaimRetries > retriesBefore, "no drain raced an open window");
        Assert.Equal(0, c.LiveObjects);
        m.Slab.DestroyCache(c);
        SlabTestUtil.AssertAllPagesBack(m);
    }
}
