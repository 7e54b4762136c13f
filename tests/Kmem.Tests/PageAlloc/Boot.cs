using Kmem.Proc;

namespace Kmem.Tests.PageAlloc;

/// <summary>Small explicit machines for page-allocator tests.</summary>
internal static class Boot
{
    /// <summary>x86_64 with only the given zones populated (managed pages), one CPU unless told.</summary>
    public static Machine X86_64(long dma = 0, long dma32 = 0, long normal = 0, int cpus = 1, int? minFreeKbytes = null)
    {
        var zones = new Dictionary<ZoneType, long>();
        if (dma > 0) zones[ZoneType.Dma] = dma;
        if (dma32 > 0) zones[ZoneType.Dma32] = dma32;
        if (normal > 0) zones[ZoneType.Normal] = normal;
        return Detached(Machine.Boot(new MachineConfig { ZoneManagedPages = zones, Cpus = cpus, MinFreeKbytes = minFreeKbytes }));
    }

    /// <summary>
    /// Unplug the reclaim slow path (kswapd, direct reclaim, OOM) that a machine attaches at boot: these tests are about
    /// the page allocator's own fast path, reserve retry and bounded failure, which is what an allocator without an
    /// <see cref="Kmem.PageAlloc.IAllocSlowPath"/> does. Without this, exhausting memory with GFP_KERNEL would sleep in
    /// reclaim retries and log OOM reports.
    /// </summary>
    public static Machine Detached(Machine m)
    {
        m.Pages.SlowPath = null;
        return m;
    }

    /// <summary>One buddyinfo line as Linux prints it: "Node 0, zone {name,8} " then each count as "{n,6} ".</summary>
    public static string Line(string zone, params long[] counts)
    {
        Assert.Equal(11, counts.Length);
        return $"Node 0, zone {zone,8} " + string.Concat(counts.Select(c => $"{c,6} ")) + "\n";
    }

    public static string Buddyinfo(Machine m) => ProcViews.Buddyinfo(m);
}
