using System.Text;
using Kmem.Diagnostics;
using Kmem.PageAlloc;

namespace Kmem.Proc;

/// <summary>
/// The kernel's own views of memory, in Linux's exact formats (fs/proc and mm/vmstat.c), rendered from a live machine.
/// Subsystems that attach later add their views with <see cref="Register"/>.
/// </summary>
public static class ProcViews
{
    private static readonly Dictionary<string, Func<Machine, string>> s_views = new(StringComparer.Ordinal)
    {
        ["buddyinfo"] = Buddyinfo,
        ["pagetypeinfo"] = Pagetypeinfo,
        ["zoneinfo"] = Zoneinfo,
        ["meminfo"] = Meminfo,
        ["slabinfo"] = m => m.Slab.SlabInfo(),
    };

    private static readonly string[] s_migratetypeNames = ["Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate"];

    /// <summary>Names of every view, sorted.</summary>
    public static IReadOnlyList<string> Names
    {
        get { lock (s_views) return s_views.Keys.Order(StringComparer.Ordinal).ToList(); }
    }

    public static void Register(string name, Func<Machine, string> render)
    {
        lock (s_views) s_views[name] = render;
    }

    public static bool TryRender(Machine m, string name, out string text)
    {
        Func<Machine, string>? f;
        lock (s_views) s_views.TryGetValue(name, out f);
        text = f?.Invoke(m) ?? "";
        return f != null;
    }

    public static string Render(Machine m, string name) =>
        TryRender(m, name, out var text) ? text : throw new ArgumentException($"no such view: {name} (have: {string.Join(", ", Names)})");

    /// <summary>/proc/buddyinfo: free blocks per order for every populated zone.</summary>
    public static string Buddyinfo(Machine m)
    {
        var sb = new StringBuilder();
        foreach (var z in m.Pages.Zones)
        {
            sb.Append($"Node 0, zone {z.Name,8} ");
            for (int o = 0; o < Zone.NrOrders; o++) sb.Append($"{z.NrFree(o),6} ");
            sb.Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>/proc/pagetypeinfo: free blocks per order and migratetype, then pageblocks per type.</summary>
    public static string Pagetypeinfo(Machine m)
    {
        var sb = new StringBuilder();
        sb.Append($"Page block order: {Zone.PageblockOrder}\n");
        sb.Append($"Pages per block:  {Zone.PageblockPages}\n\n");
        sb.Append($"{"Free pages count per migrate type at order",-43} ");
        for (int o = 0; o < Zone.NrOrders; o++) sb.Append($"{o,6} ");
        sb.Append('\n');
        foreach (var z in m.Pages.Zones)
            for (int t = 0; t < Zone.MigrateTypes; t++)
            {
                sb.Append($"Node {0,4}, zone {z.Name,8}, type {s_migratetypeNames[t],12} ");
                for (int o = 0; o < Zone.NrOrders; o++)
                {
                    long n = z.FreeCount(o, (MigrateType)t);
                    // Linux stops counting at 100000 and prints ">100000".
                    sb.Append(n >= 100000 ? $">{100000,6} " : $"{n,6} ");
                }
                sb.Append('\n');
            }
        sb.Append($"\n{"Number of blocks type ",-23}");
        foreach (var name in s_migratetypeNames) sb.Append($"{name,12} ");
        sb.Append('\n');
        foreach (var z in m.Pages.Zones)
        {
            sb.Append($"Node 0, zone {z.Name,8} ");
            for (int t = 0; t < Zone.MigrateTypes; t++) sb.Append($"{z.PageblockCount((MigrateType)t),12} ");
            sb.Append('\n');
        }
        return sb.ToString();
    }

    /// <summary>/proc/zoneinfo: every zone Linux lists, populated or not.</summary>
    public static string Zoneinfo(Machine m)
    {
        var sb = new StringBuilder();
        var pa = m.Pages;
        bool first = true;
        foreach (var type in m.Profile.AllZones)
        {
            Zone? z = pa.GetZone(type);
            sb.Append($"Node 0, zone {ZoneNames.Of(type),8}");
            if (z != null && first)
            {
                first = false;
                sb.Append("\n  per-node stats");
                foreach (var item in s_nodeStats)
                    sb.Append($"\n      {VmStat.Name(item),-12} {Math.Max(0, m.Stat[item])}");
            }
            var (min, low, high, promo) = z != null ? (z.WmarkMin, z.WmarkLow, z.WmarkHigh, z.WmarkPromo) : Watermarks.EmptyZoneWmarks(type);
            sb.Append($"\n  pages free     {z?.FreePages ?? 0}");
            sb.Append($"\n        boost    {z?.WatermarkBoost ?? 0}");
            sb.Append($"\n        min      {min}");
            sb.Append($"\n        low      {low}");
            sb.Append($"\n        high     {high}");
            sb.Append($"\n        promo    {promo}");
            sb.Append($"\n        spanned  {z?.SpannedPages ?? 0}");
            sb.Append($"\n        present  {z?.PresentPages ?? 0}");
            sb.Append($"\n        managed  {z?.ManagedPages ?? 0}");
            sb.Append("\n        cma      0");
            sb.Append("\n        protection: (");
            for (int i = 0; i < m.Profile.AllZones.Count; i++)
            {
                if (i > 0) sb.Append(", ");
                sb.Append(z?.LowmemReserve[(int)m.Profile.AllZones[i]] ?? 0);
            }
            sb.Append(')');
            if (z == null)
            {
                sb.Append('\n');
                continue;
            }
            long allocs = m.Stat[VmStat.PgAllocFor(z.Type)];
            sb.Append($"\n      {"nr_free_pages",-12} {z.FreePages}");
            sb.Append($"\n      {"nr_free_pages_blocks",-12} {z.FreePagesInBlocks()}");
            foreach (var name in s_zoneStatZeros) sb.Append($"\n      {name,-12} 0");
            sb.Append($"\n      {"numa_hit",-12} {allocs}");
            sb.Append($"\n      {"numa_miss",-12} 0");
            sb.Append($"\n      {"numa_foreign",-12} 0");
            sb.Append($"\n      {"numa_interleave",-12} 0");
            sb.Append($"\n      {"numa_local",-12} {allocs}");
            sb.Append($"\n      {"numa_other",-12} 0");
            sb.Append("\n  pagesets");
            int threshold = Watermarks.StatThreshold(z, m.CpuCount);
            foreach (var pcp in z.Pcp)
            {
                sb.Append($"\n    cpu: {pcp.Cpu}");
                sb.Append($"\n              count:    {Volatile.Read(ref pcp.Count)}");
                sb.Append($"\n              high:     {pcp.High}");
                sb.Append($"\n              batch:    {pcp.Batch}");
                sb.Append($"\n              high_min: {pcp.HighMin}");
                sb.Append($"\n              high_max: {pcp.HighMax}");
                sb.Append($"\n  vm stats threshold: {threshold}");
            }
            sb.Append("\n  node_unreclaimable:  0");
            sb.Append($"\n  start_pfn:           {z.StartPfn}");
            sb.Append('\n');
        }
        return sb.ToString();
    }

    // Zone counters kmem does not model per zone (LRU lists are per node here; no mlock, zsmalloc or CMA).
    private static readonly string[] s_zoneStatZeros =
    [
        "nr_zone_inactive_anon", "nr_zone_active_anon", "nr_zone_inactive_file", "nr_zone_active_file",
        "nr_zone_unevictable", "nr_zone_write_pending", "nr_mlock", "nr_zspages", "nr_free_cma",
    ];

    private static readonly VmItem[] s_nodeStats =
    [
        VmItem.NrInactiveAnon, VmItem.NrActiveAnon, VmItem.NrInactiveFile, VmItem.NrActiveFile,
        VmItem.NrSlabReclaimable, VmItem.NrSlabUnreclaimable, VmItem.NrAnonPages, VmItem.NrFilePages,
        VmItem.NrDirty, VmItem.NrWriteback, VmItem.NrShmem, VmItem.NrKernelMiscReclaimable,
        VmItem.NrKernelStack, VmItem.NrPageTablePages,
    ];

    /// <summary>/proc/meminfo.</summary>
    public static string Meminfo(Machine m)
    {
        var s = m.Stat;
        long P(VmItem i) => Math.Max(0, s[i]);
        long total = m.TotalRamPages;
        long free = m.FreePages;
        long activeAnon = P(VmItem.NrActiveAnon), inactiveAnon = P(VmItem.NrInactiveAnon);
        long activeFile = P(VmItem.NrActiveFile), inactiveFile = P(VmItem.NrInactiveFile);
        long sRecl = P(VmItem.NrSlabReclaimable), sUnrecl = P(VmItem.NrSlabUnreclaimable);

        // si_mem_available
        long wmarkLow = m.Pages.Zones.Sum(z => z.WmarkLow);
        long available = free - m.Pages.TotalReservePages;
        long pagecache = activeFile + inactiveFile;
        pagecache -= Math.Min(pagecache / 2, wmarkLow);
        available += pagecache;
        long reclaimable = sRecl + P(VmItem.NrKernelMiscReclaimable);
        available += reclaimable - Math.Min(reclaimable / 2, wmarkLow);
        if (available < 0) available = 0;

        var sb = new StringBuilder();
        void Kb(string label, long pages) => sb.Append($"{label + ":",-16}{pages * 4,8} kB\n");
        void KbRaw(string label, long kb) => sb.Append($"{label + ":",-16}{kb,8} kB\n");
        Kb("MemTotal", total);
        Kb("MemFree", free);
        Kb("MemAvailable", available);
        Kb("Buffers", 0);
        Kb("Cached", Math.Max(0, P(VmItem.NrFilePages)));
        Kb("SwapCached", 0);
        Kb("Active", activeAnon + activeFile);
        Kb("Inactive", inactiveAnon + inactiveFile);
        Kb("Active(anon)", activeAnon);
        Kb("Inactive(anon)", inactiveAnon);
        Kb("Active(file)", activeFile);
        Kb("Inactive(file)", inactiveFile);
        Kb("Unevictable", 0);
        Kb("Mlocked", 0);
        if (m.Profile.Has(ZoneType.HighMem))
        {
            long highTotal = m.Pages.GetZone(ZoneType.HighMem)?.ManagedPages ?? 0;
            long highFree = m.Pages.GetZone(ZoneType.HighMem)?.FreePages ?? 0;
            Kb("HighTotal", highTotal);
            Kb("HighFree", highFree);
            Kb("LowTotal", total - highTotal);
            Kb("LowFree", free - highFree);
        }
        Kb("SwapTotal", m.SwapTotalPages);
        Kb("SwapFree", m.SwapFreePages);
        Kb("Dirty", P(VmItem.NrDirty));
        Kb("Writeback", P(VmItem.NrWriteback));
        Kb("AnonPages", P(VmItem.NrAnonPages));
        Kb("Mapped", 0);
        Kb("Shmem", P(VmItem.NrShmem));
        Kb("KReclaimable", reclaimable);
        Kb("Slab", sRecl + sUnrecl);
        Kb("SReclaimable", sRecl);
        Kb("SUnreclaim", sUnrecl);
        KbRaw("KernelStack", P(VmItem.NrKernelStack) * 4);
        Kb("PageTables", P(VmItem.NrPageTablePages));
        Kb("SecPageTables", 0);
        Kb("NFS_Unstable", 0);
        Kb("Bounce", 0);
        Kb("WritebackTmp", 0);
        // vm.overcommit_ratio = 50
        Kb("CommitLimit", total * 50 / 100 + m.SwapTotalPages);
        Kb("Committed_AS", m.CommittedPages);
        KbRaw("VmallocTotal", (long)(m.Physical.VmallocSize >> 10));
        Kb("VmallocUsed", P(VmItem.NrVmallocPages));
        KbRaw("VmallocChunk", 0);
        Kb("Percpu", 0);
        sb.Append($"{"HugePages_Total:",-16}{0,8}\n");
        sb.Append($"{"HugePages_Free:",-16}{0,8}\n");
        sb.Append($"{"HugePages_Rsvd:",-16}{0,8}\n");
        sb.Append($"{"HugePages_Surp:",-16}{0,8}\n");
        KbRaw("Hugepagesize", 2048);
        KbRaw("Hugetlb", 0);
        KbRaw("DirectMap4k", m.Layout.LowmemPfnEnd * 4);
        return sb.ToString();
    }
}
