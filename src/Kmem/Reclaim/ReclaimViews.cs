using System.Runtime.CompilerServices;
using System.Text;
using Kmem.Diagnostics;
using Kmem.Proc;

namespace Kmem.Reclaim;

/// <summary>
/// The views reclaim adds: /proc/vmstat, /proc/swaps and the processes' /proc/PID/status (all processes, one block each).
/// Registered when the assembly loads, so <c>kmem proc vmstat</c> knows them before any machine boots.
/// </summary>
public static class ReclaimViews
{
#pragma warning disable CA2255 // a module initializer is the registration point of built-in views
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void RegisterAll()
    {
        ProcViews.Register("vmstat", Vmstat);
        ProcViews.Register("swaps", m => m.Reclaim.SwapsView());
        ProcViews.Register("status", Status);
    }

    // mm/vmstat.c's vmstat_text order for the items kmem keeps (nr_free_pages comes first, from the zones).
    private static readonly VmItem[] s_nodeItems =
    [
        VmItem.NrInactiveAnon, VmItem.NrActiveAnon, VmItem.NrInactiveFile, VmItem.NrActiveFile,
        VmItem.NrSlabReclaimable, VmItem.NrSlabUnreclaimable, VmItem.NrAnonPages, VmItem.NrFilePages,
        VmItem.NrDirty, VmItem.NrWriteback, VmItem.NrShmem, VmItem.NrKernelMiscReclaimable,
        VmItem.NrKernelStack, VmItem.NrPageTablePages, VmItem.NrVmallocPages,
    ];

    private static readonly VmItem[] s_events =
    [
        VmItem.PswpIn, VmItem.PswpOut,
        VmItem.PgAllocDma, VmItem.PgAllocDma32, VmItem.PgAllocNormal, VmItem.PgAllocHigh, VmItem.PgAllocMovable,
        VmItem.AllocStallDma, VmItem.AllocStallDma32, VmItem.AllocStallNormal, VmItem.AllocStallHigh, VmItem.AllocStallMovable,
        VmItem.PgFree, VmItem.PgFault, VmItem.PgMajFault,
        VmItem.PgStealKswapd, VmItem.PgStealDirect, VmItem.PgScanKswapd, VmItem.PgScanDirect,
        VmItem.SlabsScanned, VmItem.PageOutRun,
        VmItem.OomKill,
        VmItem.CompactMigrateScanned, VmItem.CompactFreeScanned, VmItem.CompactStall, VmItem.CompactFail, VmItem.CompactSuccess,
        // kmem-only: Linux has no counter of kswapd wakeups (it has *_wmark_hit_quickly); kept last.
        VmItem.KswapdWakeups,
    ];

    /// <summary>/proc/vmstat: "name value" lines. HIGHMEM counters appear only on profiles with HIGHMEM, DMA32 only on x86_64.</summary>
    public static string Vmstat(Machine m)
    {
        var sb = new StringBuilder();
        sb.Append($"nr_free_pages {m.FreePages}\n");
        foreach (var i in s_nodeItems) sb.Append($"{VmStat.Name(i)} {Math.Max(0, m.Stat[i])}\n");
        bool high = m.Profile.Has(ZoneType.HighMem), dma32 = m.Profile.Has(ZoneType.Dma32);
        foreach (var i in s_events)
        {
            if (!high && i is VmItem.PgAllocHigh or VmItem.AllocStallHigh) continue;
            if (!dma32 && i is VmItem.PgAllocDma32 or VmItem.AllocStallDma32) continue;
            sb.Append($"{VmStat.Name(i)} {m.Stat[i]}\n");
        }
        return sb.ToString();
    }

    /// <summary>Every process's /proc/PID/status memory lines, separated by blank lines.</summary>
    public static string Status(Machine m) => string.Join("\n", m.Reclaim.Processes.Select(p => p.Status()));
}
