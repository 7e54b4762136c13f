using Kmem.Diagnostics;
using Kmem.Reclaim;
using Kmem.Scenario;
using Kmem.Slab;
using Kmem.Tests.Reclaim;

namespace Kmem.Tests.Slab;

using Gfp = Kmem.Gfp;

/// <summary>
/// The slab allocator re-entered from direct reclaim: a GFP_KERNEL allocation from a cache whose new slab needs reclaim,
/// where a shrinker frees objects of that same cache on the same thread (dcache/icache do exactly this). No slab lock
/// may be held across the page allocator (design statement, section 4). Every wait is bounded: a deadlock fails the test.
/// </summary>
public unsafe class SlabReclaimTests
{
    private static Machine SmallZones()
    {
        var m = Machine.Boot(new MachineConfig
        {
            ZoneManagedPages = new Dictionary<ZoneType, long> { [ZoneType.Dma] = 1000, [ZoneType.Dma32] = 4096 },
        });
        m.Reclaim.StallTimeout = TimeSpan.FromSeconds(5);
        return m;
    }

    /// <summary>Run <paramref name="body"/> on a background thread; fail (never hang) when it does not finish in time.</summary>
    private static void RunBounded(Action body, int timeoutMs = 30000)
    {
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { body(); }
            catch (Exception e) { error = e; }
        }) { IsBackground = true };
        t.Start();
        Assert.True(t.Join(timeoutMs), "the allocation did not complete: self-deadlock (or a stall) in slab + reclaim");
        if (error != null) throw new Xunit.Sdk.XunitException("in the test thread: " + error);
    }

    [Fact]
    public void AllocationWhoseNewSlabNeedsReclaimSurvivesAShrinkerFreeingIntoTheSameCache()
    {
        using var m = SmallZones();
        RunBounded(() =>
        {
            using var pin = Cpu.Pin(0);
            using (var d = new DentryCache(m, "dentry-self"))
            {
                Assert.Equal(3000, d.Populate(3000));
                var held = ReclaimTests.FillKernel(m, Gfp.NoWarn);
                // Allocate from the same cache with GFP_KERNEL until one of its new slabs had to reclaim, and the
                // shrinker freed (on this thread, from inside that allocation) objects of this very cache.
                long made = 0;
                while (d.Shrinker.ScanCalls == 0 && made < 20000)
                {
                    Assert.Equal(1, d.Populate(1, Gfp.Kernel & ~Gfp.KswapdReclaim));
                    made++;
                }
                Assert.True(d.Shrinker.ScanCalls > 0, "the shrinker never ran");
                Assert.True(d.Shrinker.ObjectsFreed > 0);
                Assert.Equal(0, m.Stat[VmItem.OomKill]);
                // And it keeps working under pressure.
                Assert.Equal(500, d.Populate(500, Gfp.Kernel & ~Gfp.KswapdReclaim));
                Assert.Null(d.Cache.CheckInvariants());
                ReclaimTests.FreeAll(m, held);
            }
            m.Slab.ShrinkAll();
            m.Slab.RcuBarrier();
        });
        Assert.Equal(0, m.Slab.SlabPages);
        ReclaimTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void NoPerCpuLockIsHeldWhileANewSlabIsAllocated()
    {
        using var m = SmallZones();
        var cache = m.Slab.CreateCache("cpulock-probe", 128, 0, SlabFlags.ReclaimAccount)!;
        var live = new List<nint>();
        int probes = 0, lockedSeen = 0;
        int allocatingThread = -1;
        string? probeFailure = null;
        // A shrinker that, while the allocating thread sits inside AllocPages, checks that no CPU lock of the cache is
        // held, and that another thread pinned to the same CPU can allocate and free through that CPU's layer. Only
        // from that thread's direct reclaim: kswapd runs shrinkers too, at moments when the allocating thread may
        // hold a CPU lock legitimately (inside Alloc, not inside AllocPages), which the probe would count.
        long Scan(ShrinkControl sc)
        {
            if (Environment.CurrentManagedThreadId != Volatile.Read(ref allocatingThread))
                return FreeSome(sc);
            probes++;
            for (int cpu = 0; cpu < m.CpuCount; cpu++)
                if (cache.CpuLockHeld(cpu)) lockedSeen++;
            var other = new Thread(() =>
            {
                using var pin = Cpu.Pin(0);
                // Two rounds: the second one finds an empty sheaf and goes to the CPU layer (the CPU lock).
                for (int i = 0; i < 2 * ThreadSheaves.MaxCapacity; i++)
                {
                    void* p = cache.Alloc(Gfp.NoWait | Gfp.NoWarn);
                    if (p == null) continue;
                    *(long*)p = 42;
                    cache.Free(p);
                }
                cache.DrainSheaves();
            }) { IsBackground = true };
            other.Start();
            if (!other.Join(5000)) probeFailure = "a thread on the same CPU could not use the cache while a slab was being allocated";
            return FreeSome(sc);
        }
        long FreeSome(ShrinkControl sc)
        {
            long freed = 0;
            lock (live)
                while (freed < sc.NrToScan && live.Count > 0)
                {
                    cache.Free((void*)live[^1]);
                    live.RemoveAt(live.Count - 1);
                    freed++;
                }
            return freed;
        }
        var shrinker = m.Reclaim.RegisterShrinker(new Shrinker("cpulock-probe", _ => { lock (live) return live.Count; }, Scan));
        RunBounded(() =>
        {
            Volatile.Write(ref allocatingThread, Environment.CurrentManagedThreadId);
            using var pin = Cpu.Pin(0);
            for (int i = 0; i < 1000; i++) { nint p = (nint)cache.Alloc(Gfp.Kernel); lock (live) live.Add(p); }
            var held = ReclaimTests.FillKernel(m, Gfp.NoWarn);
            for (int i = 0; i < 20000 && probes == 0; i++)
            {
                void* p = cache.Alloc(Gfp.Kernel & ~Gfp.KswapdReclaim);
                Assert.True(p != null);
                lock (live) live.Add((nint)p);
            }
            ReclaimTests.FreeAll(m, held);
        }, timeoutMs: 30000);
        m.Reclaim.UnregisterShrinker(shrinker);
        Assert.True(probes > 0, "the shrinker never ran");
        Assert.Null(probeFailure);
        Assert.Equal(0, lockedSeen);
        foreach (nint p in live) cache.Free((void*)p);
        Assert.Null(cache.CheckInvariants());
        m.Slab.DestroyCache(cache);
        m.Slab.ShrinkAll();
        Assert.Equal(0, m.Slab.SlabPages);
        ReclaimTests.AssertNothingLeaked(m);
    }
}
