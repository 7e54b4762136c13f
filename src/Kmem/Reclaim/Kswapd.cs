using Kmem.Diagnostics;
using Kmem.PageAlloc;

namespace Kmem.Reclaim;

/// <summary>
/// kswapd0: the node's background reclaim thread. Sleeps until <see cref="Wake"/> finds the node unbalanced, then
/// runs balance_pgdat with GFP_KERNEL (priority 12 down to 0; per pass it aims at max(SWAP_CLUSTER_MAX, the high
/// watermark) pages; it lowers the priority only when a pass falls short) until some zone up to the requested
/// highest zone has free pages above its high watermark for the order (pgdat_balanced), then sleeps again.
/// Counts kswapd_wakeups, pageoutrun, pgscan_kswapd and pgsteal_kswapd. After MAX_RECLAIM_RETRIES fruitless runs it
/// stops answering wakeups until some reclaim succeeds (kswapd_failures).
/// </summary>
public sealed class Kswapd : IDisposable
{
    private readonly Reclaimer _r;
    private readonly Machine _m;
    private readonly object _lock = new();
    private readonly Thread _thread;
    private bool _stop;
    private bool _pending;
    private bool _running;
    private int _order;
    private ZoneType _highest;
    private int _failures;
    private long _runs;

    internal Kswapd(Reclaimer r, Machine m)
    {
        _r = r;
        _m = m;
        _thread = new Thread(Run) { Name = "kswapd0", IsBackground = true };
        _thread.Start();
    }

    /// <summary>Is kswapd reclaiming right now?</summary>
    public bool IsRunning => Volatile.Read(ref _running);
    /// <summary>balance_pgdat runs finished.</summary>
    public long Runs => Interlocked.Read(ref _runs);
    public int Failures => Volatile.Read(ref _failures);
    /// <summary>Is the kswapd0 thread alive (it ends when the machine is disposed)?</summary>
    public bool ThreadAlive => _thread.IsAlive;

    /// <summary>Direct reclaim made progress: kswapd may try again (kswapd_failures = 0).</summary>
    internal void ResetFailures() => Volatile.Write(ref _failures, 0);

    /// <summary>wakeup_kswapd.</summary>
    public void Wake(Gfp gfp, int order, ZoneType highest)
    {
        if (Volatile.Read(ref _failures) >= Reclaimer.MaxReclaimRetries) return;
        if (Balanced(order, highest)) return;
        lock (_lock)
        {
            if (_stop) return;
            if (order > _order) _order = order;
            if (highest > _highest) _highest = highest;
            if (_pending || _running) return;
            _pending = true;
            _m.Stat.Inc(VmItem.KswapdWakeups);
            Monitor.Pulse(_lock);
        }
    }

    /// <summary>pgdat_balanced: is any zone up to <paramref name="highest"/> above its high watermark for <paramref name="order"/>?</summary>
    public bool Balanced(int order, ZoneType highest)
    {
        bool any = false;
        for (int zi = (int)highest; zi >= 0; zi--)
        {
            Zone? z = _m.Pages.GetZone((ZoneType)zi);
            if (z == null) continue;
            any = true;
            if (PageAllocator.ZoneWatermarkOk(z, order, z.WmarkHigh, highest, AllocFlags.WmarkHigh, z.FreePages)) return true;
        }
        return !any;
    }

    private void Run()
    {
        CurrentTask.Set("kswapd0", 2 * 1000 + 77);
        while (true)
        {
            int order;
            ZoneType highest;
            lock (_lock)
            {
                if (!_pending && !_stop && Tracing.Emit.Tracepoints.KswapdSleepOn) Tracing.Emit.Tracepoints.KswapdSleep(0);
                while (!_pending && !_stop) Monitor.Wait(_lock, 1000);
                if (_stop) return;
                _pending = false;
                _running = true;
                order = _order;
                highest = _highest;
                _order = 0;
                _highest = 0;
            }
            if (Tracing.Emit.Tracepoints.KswapdWakeOn) Tracing.Emit.Tracepoints.KswapdWake(0, (int)highest, order);
            try { BalancePgdat(order, highest); }
            catch (Exception e) when (e is KmemException)
            {
                _m.Log.Write(LogLevel.Err, $"kswapd0: {e.Message}");
            }
            finally
            {
                lock (_lock) _running = false;
                Interlocked.Increment(ref _runs);
            }
        }
    }

    private void BalancePgdat(int order, ZoneType highest)
    {
        _m.Stat.Inc(VmItem.PageOutRun);
        var sc = new ScanControl { Gfp = Gfp.Kernel, Order = order, ReclaimIdx = highest, IsKswapd = true };
        long total = 0;
        for (sc.Priority = Reclaimer.DefPriority; sc.Priority >= 0;)
        {
            if (Balanced(order, highest) || Volatile.Read(ref _stop)) break;
            long target = Reclaimer.SwapClusterMax;
            for (int zi = (int)highest; zi >= 0; zi--)
                if (_m.Pages.GetZone((ZoneType)zi) is { } z) target = Math.Max(target, z.WmarkHigh);
            sc.NrToReclaim = target;
            sc.NrReclaimed = 0;
            _r.ShrinkNode(sc);
            total += sc.NrReclaimed;
            if (sc.NrReclaimed > 0) _r.NotifyFreed();
            _m.Pages.DrainAllPages();
            if (sc.NrReclaimed < sc.NrToReclaim) sc.Priority--;
        }
        if (total > 0) Volatile.Write(ref _failures, 0);
        else if (!Balanced(order, highest)) Interlocked.Increment(ref _failures);
    }

    public void Dispose()
    {
        lock (_lock)
        {
            _stop = true;
            Monitor.PulseAll(_lock);
        }
        _thread.Join(TimeSpan.FromSeconds(10));
    }
}
