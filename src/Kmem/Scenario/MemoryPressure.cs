using System.Diagnostics;
using Kmem.Diagnostics;
using Kmem.Mm;
using Kmem.Reclaim;
using Process = Kmem.Mm.Process;

namespace Kmem.Scenario;

/// <summary>Reclaim and OOM counters at one moment (for a summary, or the difference of two with <see cref="Since"/>).</summary>
public readonly record struct ReclaimReport(
    long KswapdWakeups, long DirectReclaimStalls, long PagesScanned, long PagesReclaimed, long PagesSwappedOut,
    long PagesSwappedIn, long OomKills, long CompactStalls, long CompactSuccesses, long PageFaults, long MajorFaults)
{
    public static ReclaimReport Of(Machine m)
    {
        var s = m.Stat;
        return new ReclaimReport(
            s[VmItem.KswapdWakeups],
            s[VmItem.AllocStallDma] + s[VmItem.AllocStallDma32] + s[VmItem.AllocStallNormal] + s[VmItem.AllocStallHigh] + s[VmItem.AllocStallMovable],
            s[VmItem.PgScanKswapd] + s[VmItem.PgScanDirect],
            s[VmItem.PgStealKswapd] + s[VmItem.PgStealDirect],
            s[VmItem.PswpOut], s[VmItem.PswpIn], s[VmItem.OomKill], s[VmItem.CompactStall], s[VmItem.CompactSuccess],
            s[VmItem.PgFault], s[VmItem.PgMajFault]);
    }

    public ReclaimReport Since(ReclaimReport before) => new(
        KswapdWakeups - before.KswapdWakeups, DirectReclaimStalls - before.DirectReclaimStalls, PagesScanned - before.PagesScanned,
        PagesReclaimed - before.PagesReclaimed, PagesSwappedOut - before.PagesSwappedOut, PagesSwappedIn - before.PagesSwappedIn,
        OomKills - before.OomKills, CompactStalls - before.CompactStalls, CompactSuccesses - before.CompactSuccesses,
        PageFaults - before.PageFaults, MajorFaults - before.MajorFaults);
}

/// <summary>What one burst of kernel allocations got.</summary>
public readonly record struct PressureResult(string GfpName, long Requested, long Allocated, long Failures, double ElapsedMs);

/// <summary>The same amount of memory asked for by a process and by the kernel (see <see cref="MemoryPressure.CompareKernelVsUser"/>).</summary>
public readonly record struct KernelVsUser(
    long Bytes,
    double UserMmapMs, long UserRssAfterMmapKb, long UserVmSizeKb, long UserRssAfterTouchKb, int UserTouchedPages, int UserPhysicalRuns,
    double KernelAllocMs, long KernelAllocatedKb, int KernelBlocks, int KernelBlockOrder, long KernelFreeDropKb);

/// <summary>
/// A scenario-ready toolkit for memory pressure on a booted machine: spawn processes with resident memory, fill the
/// page cache (clean or dirty), attach swap, and push with kernel allocations of any GFP type from any context; then
/// read what reclaim, kswapd and the OOM killer did. Everything it creates is released by <see cref="Dispose"/>.
/// </summary>
/// <example>
/// <code>
/// using var mp = new MemoryPressure(machine);
/// mp.SwapOn(16 &lt;&lt; 20);
/// var db = mp.SpawnProcess("postgres", 8 &lt;&lt; 20);
/// mp.FillPageCache("logs", 2000, dirtyFraction: 0.25);
/// var before = ReclaimReport.Of(machine);
/// var r = mp.KernelAllocate(Gfp.Kernel, 3000);            // direct reclaim, kswapd, maybe an OOM kill
/// var atomic = mp.KernelAllocateIn(Context.RunInSoftirq, Gfp.Atomic, 64); // never sleeps; may fail
/// var what = ReclaimReport.Of(machine).Since(before);
/// </code>
/// </example>
public sealed unsafe class MemoryPressure : IDisposable
{
    private readonly Machine _m;
    private readonly List<(nint Page, int Order)> _kernel = new();
    private readonly List<Process> _procs = new();
    private readonly List<CachedFile> _files = new();

    public MemoryPressure(Machine machine) => _m = machine;

    public Machine Machine => _m;
    /// <summary>Kernel pages this helper holds.</summary>
    public long KernelPagesHeld { get { lock (_kernel) return _kernel.Sum(k => 1L << k.Order); } }

    /// <summary>swapon with a device of <paramref name="bytes"/>.</summary>
    public SwapDevice SwapOn(long bytes) => _m.Reclaim.SwapOn(Math.Max(2, bytes / ArchProfile.PageSize + 1));

    /// <summary>A process that maps <paramref name="bytes"/> and, when <paramref name="touch"/>, writes every page (so it is resident).</summary>
    public Process SpawnProcess(string comm, long bytes, int oomScoreAdj = 0, bool touch = true)
    {
        var p = _m.Reclaim.CreateProcess(comm, oomScoreAdj);
        lock (_procs) _procs.Add(p);
        ulong a = p.Mmap(bytes);
        if (touch)
        {
            Span<byte> stamp = stackalloc byte[8];
            for (long off = 0; off < bytes; off += ArchProfile.PageSize)
            {
                BitConverter.TryWriteBytes(stamp, (long)a + off);
                p.Write(a + (ulong)off, stamp);
            }
        }
        return p;
    }

    /// <summary>A file of <paramref name="pages"/> pages read into the page cache; a fraction of them written (dirty).</summary>
    public CachedFile FillPageCache(string name, long pages, double dirtyFraction = 0, Gfp? gfp = null)
    {
        var f = _m.Reclaim.PageCache.CreateFile(name, pages);
        lock (_files) _files.Add(f);
        Span<byte> buf = stackalloc byte[64];
        long dirty = (long)(pages * dirtyFraction);
        for (long i = 0; i < pages; i++)
        {
            if (i < dirty)
            {
                BitConverter.TryWriteBytes(buf, i);
                f.Write(i, buf, gfp);
            }
            else f.Read(i, buf, gfp);
        }
        return f;
    }

    /// <summary>Kernel allocations (pinned, never reclaimed) of <paramref name="count"/> order-<paramref name="order"/> blocks with <paramref name="gfp"/>; stops at the first failure.</summary>
    public PressureResult KernelAllocate(Gfp gfp, long count, int order = 0)
    {
        long t0 = Stopwatch.GetTimestamp();
        long ok = 0, failed = 0;
        for (long i = 0; i < count; i++)
        {
            PageFrame* p = _m.Pages.AllocPages(gfp, order);
            if (p == null)
            {
                failed++;
                break;
            }
            lock (_kernel) _kernel.Add(((nint)p, order));
            ok++;
        }
        return new PressureResult(GfpFormat.Format(gfp), count, ok, failed, Stopwatch.GetElapsedTime(t0).TotalMilliseconds);
    }

    /// <summary>As <see cref="KernelAllocate"/>, from inside a context runner such as <see cref="Context.RunInSoftirq"/>.</summary>
    public PressureResult KernelAllocateIn(Action<Action> runner, Gfp gfp, long count, int order = 0)
    {
        PressureResult r = default;
        runner(() => r = KernelAllocate(gfp, count, order));
        return r;
    }

    /// <summary>Give back up to <paramref name="pages"/> pages of the kernel memory held (newest first); 0 = all.</summary>
    public long KernelFree(long pages = 0)
    {
        long freed = 0;
        lock (_kernel)
        {
            while (_kernel.Count > 0 && (pages == 0 || freed < pages))
            {
                var (p, o) = _kernel[^1];
                _kernel.RemoveAt(_kernel.Count - 1);
                _m.Pages.FreePages((PageFrame*)p, o);
                freed += 1L << o;
            }
        }
        _m.Reclaim.NotifyFreed();
        return freed;
    }

    /// <summary>
    /// The same <paramref name="bytes"/> asked for by a process (mmap: instant, nothing resident until touched, pageable,
    /// virtually contiguous only) and by the kernel (order-10 alloc_pages blocks: resident at once, pinned, physically
    /// contiguous within each 4 MiB block). The kernel side uses __GFP_NORETRY | __GFP_NOWARN so a small machine
    /// reports what it could get instead of triggering the OOM killer. Both sides are released before returning.
    /// </summary>
    public static KernelVsUser CompareKernelVsUser(Machine m, long bytes = 64L << 20, int touchPages = 16)
    {
        var proc = m.Reclaim.CreateProcess("user-64m");
        try
        {
            long t0 = Stopwatch.GetTimestamp();
            ulong a = proc.Mmap(bytes);
            double mmapMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            long rss0 = proc.RssPages * 4, vm = proc.TotalVmPages * 4;
            long stride = Math.Max(1, bytes / ArchProfile.PageSize / touchPages);
            for (int i = 0; i < touchPages; i++)
            {
                ulong addr = a + (ulong)(i * stride * ArchProfile.PageSize);
                proc.Touch(addr);
            }
            long rss1 = proc.RssPages * 4;
            int runs = touchPages; // each touched page is its own frame, wherever the allocator found it
            proc.Exit();

            const int order = 10;
            long blockBytes = (long)ArchProfile.PageSize << order;
            int want = (int)((bytes + blockBytes - 1) / blockBytes);
            var blocks = new List<nint>();
            m.Pages.DrainAllPages();
            long free0 = m.FreePages;
            long t1 = Stopwatch.GetTimestamp();
            for (int i = 0; i < want; i++)
            {
                PageFrame* p = m.Pages.AllocPages(Gfp.Kernel | Gfp.NoRetry | Gfp.NoWarn, order);
                if (p == null) break;
                blocks.Add((nint)p);
            }
            double kMs = Stopwatch.GetElapsedTime(t1).TotalMilliseconds;
            long drop = (free0 - m.FreePages) * 4;
            foreach (var b in blocks) m.Pages.FreePages((PageFrame*)b, order);
            m.Reclaim.NotifyFreed();
            return new KernelVsUser(bytes, mmapMs, rss0, vm, rss1, touchPages, runs, kMs, blocks.Count * blockBytes / 1024, blocks.Count, order, drop);
        }
        finally
        {
            if (!proc.HasExited) proc.Exit();
        }
    }

    public void Dispose()
    {
        KernelFree();
        lock (_procs)
        {
            foreach (var p in _procs) if (!p.HasExited) p.Exit();
            _procs.Clear();
        }
        lock (_files)
        {
            foreach (var f in _files) f.Delete();
            _files.Clear();
        }
    }
}
