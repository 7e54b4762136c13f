using Kmem.Tracing;

namespace Kmem.Replay;

/// <summary>
/// Sizes a machine for a trace: one fast pass (parse only) computing the peak of live bytes the replay will hold in
/// the given mode (slab objects at bytes_alloc, page blocks, vmalloc areas), then RAM = max(512 MiB, 2 × peak +
/// 128 MiB) rounded up to 128 MiB. The factor 2 covers slab overhead (partial slabs, per-CPU caches) and buddy
/// fragmentation; the 128 MiB covers the watermarks and reserves (min_free_kbytes, lowmem_reserve). Both are
/// guesses checked against the two real traces (no failures), not derived bounds.
/// </summary>
public static class ReplaySizing
{
    /// <summary>The floor: <c>kmem run</c>'s default machine.</summary>
    public const long MinRamBytes = 512L << 20;

    /// <summary>Peak live bytes of <paramref name="path"/> replayed in <paramref name="mode"/>.</summary>
    public static long PeakLiveBytes(string path, ReplayMode mode, FtraceReaderOptions? options = null)
    {
        using var reader = new FtraceReader(path, options ?? FtraceReaderOptions.Lenient);
        using var objects = new PointerTable<long>(1 << 16);
        using var pages = new PointerTable<long>(1 << 16);
        using var vmaps = new PointerTable<long>(256);
        long live = 0, peak = 0;
        bool doObjects = mode != ReplayMode.Pages;
        bool filter = mode == ReplayMode.Objects;
        while (reader.TryRead(out TraceEvent ev))
        {
            switch (ev.Kind)
            {
                case EventKind.Kmalloc or EventKind.KmemCacheAlloc when doObjects:
                    if (objects.Remove(ev.Ptr, out long old)) live -= old;
                    objects.Set(ev.Ptr, ev.BytesAlloc);
                    live += ev.BytesAlloc;
                    break;
                case EventKind.Kfree or EventKind.KmemCacheFree when doObjects:
                    if (objects.Remove(ev.Ptr, out long b)) live -= b;
                    break;
                case EventKind.MmPageAlloc when !(filter && ReplayEngine.IsSlabPageGfp(ev.Gfp)):
                    if (pages.Remove(ev.Pfn, out long oldp)) live -= oldp;
                    pages.Set(ev.Pfn, ArchProfile.PageSize << ev.Order);
                    live += ArchProfile.PageSize << ev.Order;
                    break;
                case EventKind.MmPageFree:
                    if (pages.Remove(ev.Pfn, out long bp)) live -= bp;
                    break;
                case EventKind.AllocVmapArea when doObjects && !ev.Failed:
                    if (vmaps.Remove(ev.VaStart, out long oldv)) live -= oldv;
                    vmaps.Set(ev.VaStart, (long)ev.Size);
                    live += (long)ev.Size;
                    break;
                case EventKind.FreeVmapAreaNoflush when doObjects:
                    if (vmaps.Remove(ev.VaStart, out long bv)) live -= bv;
                    break;
            }
            if (live > peak) peak = live;
        }
        return peak;
    }

    /// <summary>RAM for a replay whose live set peaks at <paramref name="peakLiveBytes"/>.</summary>
    public static long RamFor(long peakLiveBytes)
    {
        const long Step = 128L << 20;
        long want = 2 * Math.Max(0, peakLiveBytes) + Step;
        want = (want + Step - 1) / Step * Step;
        return Math.Max(MinRamBytes, want);
    }
}
