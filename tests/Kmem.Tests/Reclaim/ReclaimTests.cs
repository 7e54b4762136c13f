using Kmem.Diagnostics;
using Kmem.Mm;
using Kmem.Reclaim;

namespace Kmem.Tests.Reclaim;

using Gfp = Kmem.Gfp;

/// <summary>Small machines (one 32 MiB DMA32 zone), so pressure is cheap. Every wait is bounded.</summary>
public unsafe class ReclaimTests
{
    internal static Machine Small(long pages = 8192)
    {
        var m = Machine.Boot(new MachineConfig { ZoneManagedPages = new Dictionary<ZoneType, long> { [ZoneType.Dma32] = pages } });
        m.Reclaim.StallTimeout = TimeSpan.FromSeconds(5);
        return m;
    }

    /// <summary>Kernel allocations (pinned) with GFP_NOWAIT until the zone reaches its min watermark.</summary>
    internal static List<nint> FillKernel(Machine m, Gfp gfp = Gfp.NoWait)
    {
        var pages = new List<nint>();
        while (true)
        {
            PageFrame* p = m.Pages.AllocPages(gfp | Gfp.NoWarn, 0);
            if (p == null) break;
            pages.Add((nint)p);
        }
        return pages;
    }

    internal static void FreeAll(Machine m, List<nint> pages)
    {
        foreach (var p in pages) m.Pages.FreePages((PageFrame*)p, 0);
        pages.Clear();
    }

    internal static long Boot(Machine m) => m.Pages.Zones.Sum(z => z.ManagedPages);

    internal static void AssertNothingLeaked(Machine m)
    {
        foreach (var p in m.Reclaim.Processes) p.Exit();
        foreach (var f in m.Reclaim.PageCache.Files) f.Delete();
        m.Pages.DrainAllPages();
        Assert.Equal(Boot(m), m.FreePages);
        Assert.Null(m.Pages.CheckInvariants());
        Assert.Equal(0, m.Stat[VmItem.NrAnonPages]);
        Assert.Equal(0, m.Stat[VmItem.NrFilePages]);
        Assert.Equal(0, m.Stat[VmItem.NrPageTablePages]);
        Assert.Equal(0, m.CommittedPages);
        if (m.Reclaim.Swap is { } s) Assert.Equal(s.TotalPages - 1, s.FreePages);
    }

    [Fact]
    public void GfpKernelBlocksUntilAnotherThreadFrees()
    {
        using var m = Small();
        var held = FillKernel(m);
        held.AddRange(FillKernel(m, Gfp.Atomic));
        nint got = 0;
        var t = new Thread(() => got = (nint)m.Pages.AllocPages(Gfp.Kernel, 0)) { IsBackground = true };
        t.Start();
        Assert.False(t.Join(300), "GFP_KERNEL should sleep while nothing can be freed");
        Assert.True(m.Reclaim.DirectReclaimRuns > 0);
        Assert.True(m.Stat[VmItem.AllocStallDma32] > 0);
        // Another thread (this one) frees kernel memory: the sleeper notices and succeeds.
        FreeAll(m, held);
        Assert.True(t.Join(5000), "the blocked allocation did not resume");
        Assert.NotEqual(0, got);
        m.Pages.FreePages((PageFrame*)got, 0);
        Assert.True(m.Log.Contains("Out of memory and no killable processes"));
        var stall = m.Reclaim.Stalls[Gfp.Kernel];
        Assert.True(stall.BlockedMs >= 250, $"blocked {stall.BlockedMs} ms");
        AssertNothingLeaked(m);
    }

    [Fact]
    public void GfpAtomicFailsFastButUsesTheAtomicReserve()
    {
        using var m = Small();
        var held = FillKernel(m); // down to the min watermark: GFP_NOWAIT gets nothing more
        var lk = new KSpinLock("rx");
        using (lk.LockIrqSave())
        {
            // Only the atomic reserve is left: GFP_ATOMIC still succeeds...
            PageFrame* p = m.Pages.AllocPages(Gfp.Atomic, 0);
            Assert.True(p != null);
            held.Add((nint)p);
            held.AddRange(FillKernel(m, Gfp.Atomic));
            // ...until the reserve is gone; then it fails at once, without sleeping.
            long t0 = Environment.TickCount64;
            Assert.True(m.Pages.AllocPages(Gfp.Atomic | Gfp.NoWarn, 0) == null);
            Assert.True(m.Pages.AllocPages(Gfp.NoWait, 0) == null);
            Assert.True(Environment.TickCount64 - t0 < 200);
        }
        var z = m.Pages.Zones[0];
        Assert.InRange(z.FreePages + m.Pages.PcpPages(z), 0, z.WmarkMin);
        Assert.Equal(0, m.Reclaim.DirectReclaimRuns);
        FreeAll(m, held);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void DirectReclaimDropsCleanPageCache()
    {
        using var m = Small();
        var f = m.Reclaim.PageCache.CreateFile("data", 3000);
        var buf = new byte[4096];
        for (int i = 0; i < 3000; i++) f.Read(i, buf);
        Assert.Equal(3000, f.CachedPages);
        var held = FillKernel(m);
        PageFrame* p = m.Pages.AllocPages(Gfp.Kernel, 0);
        Assert.True(p != null);
        held.Add((nint)p);
        Assert.True(f.CachedPages < 3000);
        Assert.True(m.Stat[VmItem.PgStealDirect] + m.Stat[VmItem.PgStealKswapd] > 0);
        FreeAll(m, held);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void NoIoReclaimsOnlyCleanPagesAndNoFsDoesNoWriteback()
    {
        using var m = Small();
        m.Reclaim.SwapOn(4096);
        var f = m.Reclaim.PageCache.CreateFile("dirty", 1500);
        var data = new byte[4096];
        for (int i = 0; i < 1500; i++)
        {
            data[0] = (byte)i;
            f.Write(i, data);
        }
        var proc = m.Reclaim.CreateProcess("worker");
        ulong a = proc.Mmap(1500 * 4096L);
        proc.TouchRange(a, 1500 * 4096L);
        var fsShrinker = m.Reclaim.RegisterShrinker(new Shrinker("dcache", _ => 1000, c => c.NrToScan, ShrinkerFlags.NeedsFs));
        var plain = m.Reclaim.RegisterShrinker(new Shrinker("plain", _ => 1000, c => c.NrToScan));
        long dirtyBefore = m.Stat[VmItem.NrDirty];
        Assert.Equal(1500, dirtyBefore);

        // Stop kswapd from helping (it reclaims with GFP_KERNEL) by keeping it busy-free: we check direct-reclaim effects only
        // through what NOIO could not have done.
        var sc = new ScanControl { Gfp = Gfp.NoIo, ReclaimIdx = ZoneType.Normal, NrToReclaim = 512 };
        m.Reclaim.DoTryToFreePages(sc);
        Assert.Equal(0, sc.NrSwappedOut);
        Assert.Equal(0, sc.NrWritten);
        Assert.True(sc.NrDirtySkipped > 0);
        Assert.Equal(0, fsShrinker.ScanCalls);
        Assert.True(plain.ScanCalls > 0);

        var sc2 = new ScanControl { Gfp = Gfp.NoFs, ReclaimIdx = ZoneType.Normal, NrToReclaim = 512 };
        m.Reclaim.DoTryToFreePages(sc2);
        Assert.True(sc2.NrSwappedOut > 0, "GFP_NOFS may swap anonymous pages");
        Assert.Equal(0, sc2.NrWritten);
        Assert.Equal(0, fsShrinker.ScanCalls);

        var sc3 = new ScanControl { Gfp = Gfp.Kernel, ReclaimIdx = ZoneType.Normal, NrToReclaim = 512 };
        m.Reclaim.DoTryToFreePages(sc3);
        Assert.True(sc3.NrWritten > 0, "GFP_KERNEL may write back dirty file pages");
        Assert.True(fsShrinker.ScanCalls > 0);

        // The data survived: written-back pages read back from disk, swapped pages fault back.
        var buf = new byte[4096];
        for (int i = 0; i < 1500; i++)
        {
            f.Read(i, buf);
            Assert.Equal((byte)i, buf[0]);
        }
        m.Reclaim.UnregisterShrinker(fsShrinker);
        m.Reclaim.UnregisterShrinker(plain);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void OomKillerPicksTheBiggestAdjustedProcessAndTheAllocationSucceeds()
    {
        using var m = Small();
        var small = m.Reclaim.CreateProcess("small");
        var big = m.Reclaim.CreateProcess("big");
        var shielded = m.Reclaim.CreateProcess("sshd", oomScoreAdj: -1000);
        ulong a = small.Mmap(200 * 4096L); small.TouchRange(a, 200 * 4096L);
        ulong b = big.Mmap(3000 * 4096L); big.TouchRange(b, 3000 * 4096L);
        ulong c = shielded.Mmap(3500 * 4096L); shielded.TouchRange(c, 3500 * 4096L);
        Assert.True(m.Reclaim.OomBadness(big) > m.Reclaim.OomBadness(small));
        Assert.Equal(long.MinValue, m.Reclaim.OomBadness(shielded));

        var held = FillKernel(m);
        PageFrame* p = m.Pages.AllocPages(Gfp.Kernel, 0); // no swap: reclaim cannot help, the OOM killer must
        Assert.True(p != null);
        held.Add((nint)p);
        Assert.True(big.IsKilled);
        Assert.False(small.IsKilled);
        Assert.False(shielded.IsKilled);
        Assert.Equal(1, m.Stat[VmItem.OomKill]);
        Assert.Contains(m.Log.Lines, l => l.StartsWith($"Out of memory: Killed process {big.Pid} (big) total-vm:12000kB, anon-rss:12000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:", StringComparison.Ordinal) && l.EndsWith("oom_score_adj:0"));
        Assert.Contains(m.Log.Lines, l => l.Contains("invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0"));
        var e = Assert.Throws<MmException>(() => big.Touch(b));
        Assert.Equal("SIGKILL", e.Error);
        FreeAll(m, held);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void OomScoreAdjShiftsTheChoice()
    {
        using var m = Small();
        var big = m.Reclaim.CreateProcess("big", oomScoreAdj: -900);
        var smaller = m.Reclaim.CreateProcess("smaller", oomScoreAdj: 500);
        ulong b = big.Mmap(3000 * 4096L); big.TouchRange(b, 3000 * 4096L);
        ulong s = smaller.Mmap(1000 * 4096L); smaller.TouchRange(s, 1000 * 4096L);
        Assert.True(m.Reclaim.OutOfMemory(Gfp.Kernel, 0));
        Assert.True(smaller.IsKilled);
        Assert.False(big.IsKilled);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void CostlyOrdersAndRetryMayFailNeverOomKill()
    {
        using var m = Small();
        var p = m.Reclaim.CreateProcess("victim");
        ulong a = p.Mmap(3000 * 4096L); p.TouchRange(a, 3000 * 4096L);
        var held = FillKernel(m);
        Assert.True(m.Pages.AllocPages(Gfp.Kernel | Gfp.RetryMayFail | Gfp.NoWarn, 0) == null);
        Assert.True(m.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, 5) == null);
        Assert.True(m.Pages.AllocPages(Gfp.Kernel | Gfp.NoRetry | Gfp.NoWarn, 0) == null);
        Assert.False(p.IsKilled);
        Assert.Equal(0, m.Stat[VmItem.OomKill]);
        FreeAll(m, held);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void NoFailNeverReturnsNull()
    {
        using var m = Small();
        m.Reclaim.StallTimeout = TimeSpan.FromMilliseconds(50);
        var held = FillKernel(m);
        held.AddRange(FillKernel(m, Gfp.Atomic));
        // A helper frees 64 pages after 300 ms, well past the 50 ms stall timeout that would fail a normal allocation.
        var first = held.GetRange(0, 64);
        held.RemoveRange(0, 64);
        var freer = new Thread(() => { Thread.Sleep(300); FreeAll(m, first); }) { IsBackground = true };
        freer.Start();
        var got = new List<nint>();
        for (int i = 0; i < 8; i++)
        {
            PageFrame* p = m.Pages.AllocPages(Gfp.Kernel | Gfp.NoFail, 0);
            Assert.True(p != null);
            got.Add((nint)p);
        }
        Assert.True(freer.Join(5000));
        FreeAll(m, got);
        FreeAll(m, held);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void KswapdWakesAndReachesHigh()
    {
        using var m = Small();
        var f = m.Reclaim.PageCache.CreateFile("cache", 4000);
        var buf = new byte[4096];
        for (int i = 0; i < 4000; i++) f.Read(i, buf);
        var z = m.Pages.Zones[0];
        var held = FillKernel(m); // falls below low: wakes kswapd
        Assert.True(m.Stat[VmItem.KswapdWakeups] > 0);
        long deadline = Environment.TickCount64 + 5000;
        while (!m.Reclaim.Kswapd.Balanced(0, ZoneType.Normal) && Environment.TickCount64 < deadline) Thread.Sleep(5);
        Assert.True(z.FreePages > z.WmarkHigh, $"free {z.FreePages} high {z.WmarkHigh}");
        Assert.True(m.Stat[VmItem.PgStealKswapd] > 0);
        Assert.True(m.Stat[VmItem.PgScanKswapd] >= m.Stat[VmItem.PgStealKswapd]);
        FreeAll(m, held);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void NoIoAndNoFsAllocationsEndToEnd()
    {
        using var m = Small();
        m.Reclaim.StallTimeout = TimeSpan.FromMilliseconds(300);
        m.Reclaim.SwapOn(2048);
        // Without __GFP_KSWAPD_RECLAIM nothing wakes kswapd, so every effect below is the caller's own direct reclaim.
        const Gfp noio = Gfp.NoIo & ~Gfp.KswapdReclaim, nofs = Gfp.NoFs & ~Gfp.KswapdReclaim, kernel = Gfp.Kernel & ~Gfp.KswapdReclaim;
        var dirty = m.Reclaim.PageCache.CreateFile("dirty", 400);
        var clean = m.Reclaim.PageCache.CreateFile("clean", 300);
        var data = new byte[64];
        for (int i = 0; i < 400; i++) dirty.Write(i, data);
        for (int i = 0; i < 300; i++) clean.Read(i, data);
        var proc = m.Reclaim.CreateProcess("anon");
        ulong a = proc.Mmap(400 * 4096L);
        proc.TouchRange(a, 400 * 4096L);
        var held = FillKernel(m, Gfp.NoWarn);
        Assert.Equal(0, m.Stat[VmItem.KswapdWakeups]);

        // GFP_NOIO: only clean page cache can go; dirty pages stay dirty and nothing is swapped.
        for (int i = 0; i < 200; i++)
        {
            PageFrame* p = m.Pages.AllocPages(noio, 0);
            Assert.True(p != null);
            held.Add((nint)p);
        }
        Assert.True(clean.CachedPages < 300);
        Assert.Equal(400, dirty.CachedPages);
        Assert.Equal(0, dirty.Writebacks);
        Assert.Equal(0, proc.SwapPages);
        // Once the clean pages it can reach are gone, NOIO cannot make progress: it fails (no OOM kill without __GFP_FS).
        PageFrame* q;
        while ((q = m.Pages.AllocPages(noio | Gfp.NoWarn, 0)) != null) held.Add((nint)q);
        Assert.Equal(0, dirty.Writebacks);
        Assert.Equal(0, m.Stat[VmItem.OomKill]);
        Assert.False(proc.IsKilled);

        // GFP_NOFS may do I/O but not filesystem work: it swaps anonymous pages, still writes back nothing.
        for (int i = 0; i < 100; i++)
        {
            PageFrame* p = m.Pages.AllocPages(nofs, 0);
            Assert.True(p != null);
            held.Add((nint)p);
        }
        Assert.True(proc.SwapPages > 0);
        Assert.Equal(0, dirty.Writebacks);

        // GFP_KERNEL may write dirty pages back.
        for (int i = 0; i < 300 && dirty.Writebacks == 0; i++)
        {
            PageFrame* p = m.Pages.AllocPages(kernel, 0);
            Assert.True(p != null);
            held.Add((nint)p);
        }
        Assert.True(dirty.Writebacks > 0);
        FreeAll(m, held);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void KswapdStopsWithTheMachine()
    {
        var m = Small();
        var k = m.Reclaim.Kswapd;
        Assert.True(k.ThreadAlive);
        m.Dispose();
        Assert.False(k.ThreadAlive);
    }

    [Fact]
    public void UserAccessFromAtomicContextIsReported()
    {
        using var m = Small();
        var p = m.Reclaim.CreateProcess("app");
        ulong a = p.Mmap(4096);
        var l = new KSpinLock("pt");
        using (l.Acquire()) Assert.Throws<SleepInAtomicException>(() => p.Touch(a));
        p.Touch(a);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void CompactionAssemblesACostlyBlockByMigratingUserPages()
    {
        using var m = Small();
        var proc = m.Reclaim.CreateProcess("frag");
        ulong a = proc.Mmap(6000 * 4096L);
        proc.TouchRange(a, 6000 * 4096L);
        var pattern = new byte[4096];
        for (int i = 0; i < 6000; i += 97)
        {
            BitConverter.TryWriteBytes(pattern, i * 7919);
            proc.Write(a + (ulong)i * 4096, pattern.AsSpan(0, 4));
        }
        // Punch a hole every other page: plenty free, nothing contiguous.
        for (int i = 0; i < 6000; i += 2) proc.Munmap(a + (ulong)i * 4096, 4096);
        m.Pages.DrainAllPages();
        // The kernel takes every remaining contiguous block (pinned): what is free now is only the holes.
        var pinned = new List<nint>();
        for (PageFrame* q; (q = m.Pages.AllocPages(Gfp.NoWait, 4)) != null;) pinned.Add((nint)q);
        var z = m.Pages.Zones[0];
        Assert.True(z.FreePages > 2500);
        Assert.Equal(0, Enumerable.Range(4, 7).Sum(o => z.NrFree(o)));
        var held = new List<nint>(pinned);
        for (int i = 0; i < 3; i++)
        {
            PageFrame* p = m.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, 4);
            Assert.True(p != null, $"i={i} stall {m.Stat[VmItem.CompactStall]} fail {m.Stat[VmItem.CompactFail]} ok {m.Stat[VmItem.CompactSuccess]} scanned {m.Stat[VmItem.CompactMigrateScanned]} free {m.FreePages}\n{m.Pages.ShowFreeAreas()}");
            held.Add((nint)p);
        }
        Assert.True(m.Stat[VmItem.CompactSuccess] > 0);
        var buf = new byte[4];
        for (int i = 1; i < 6000; i += 2)
            if (i % 97 == 0)
            {
                proc.Read(a + (ulong)i * 4096, buf);
                Assert.Equal(i * 7919, BitConverter.ToInt32(buf));
            }
        foreach (var p in held) m.Pages.FreePages((PageFrame*)p, 4);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void ShrinkersAreCalledInProportionToPressure()
    {
        using var m = Small();
        long objects = 100000;
        var s = m.Reclaim.RegisterShrinker(new Shrinker("icache", _ => Interlocked.Read(ref objects), c =>
        {
            long n = Math.Min(c.NrToScan, Interlocked.Read(ref objects));
            Interlocked.Add(ref objects, -n);
            return n;
        }));
        var light = new ScanControl { Gfp = Gfp.Kernel, Priority = 12, ReclaimIdx = ZoneType.Normal };
        m.Reclaim.ShrinkNode(light);
        long afterLight = s.ObjectsFreed;
        var heavy = new ScanControl { Gfp = Gfp.Kernel, Priority = 2, ReclaimIdx = ZoneType.Normal };
        m.Reclaim.ShrinkNode(heavy);
        long heavyFreed = s.ObjectsFreed - afterLight;
        // (freeable >> priority) * 4 / seeks: 100000 >> 12 = 24 -> 48 (below one batch of 128: deferred); >> 2 -> 50000.
        Assert.InRange(afterLight, 0, 128);
        Assert.True(heavyFreed > 10000, $"heavy pass freed {heavyFreed}");
        m.Reclaim.UnregisterShrinker(s);
    }
}
