namespace Kmem.PageAlloc;

/// <summary>
/// The boot-time arithmetic of mm/page_alloc.c: min_free_kbytes, watermarks, lowmem protection, per-CPU batch/high.
/// Every formula is Linux's; the tests check them against a real kernel's /proc/zoneinfo.
/// </summary>
public static class Watermarks
{
    /// <summary>SWAP_CLUSTER_MAX: the floor of a HIGHMEM zone's min watermark.</summary>
    public const long SwapClusterMax = 32;

    /// <summary>
    /// calculate_min_free_kbytes: int_sqrt(lowmem_kbytes * 16), clamped to [128, 262144]. lowmem_kbytes is
    /// nr_free_buffer_pages(), the managed pages of the zones GFP_USER may use, taken before any watermark exists.
    /// (A real kernel with THP may then raise it, set_recommended_min_free_kbytes; kmem has no THP.)
    /// </summary>
    public static int CalculateMinFreeKbytes(IEnumerable<Zone> zones)
    {
        long lowmemKbytes = zones.Where(z => !z.IsHighMem).Sum(z => z.ManagedPages) * (ArchProfile.PageSize >> 10);
        return CalculateMinFreeKbytes(lowmemKbytes);
    }

    /// <summary>calculate_min_free_kbytes for <paramref name="lowmemKbytes"/> of lowmem.</summary>
    public static int CalculateMinFreeKbytes(long lowmemKbytes)
    {
        long newMin = (long)IntSqrt((ulong)(lowmemKbytes * 16));
        return (int)Math.Clamp(newMin, 128, 262144);
    }

    /// <summary>
    /// int_sqrt (lib/math/int_sqrt.c): floor of the square root, by Linux's digit-by-digit method. (A floating-point
    /// estimate corrected by squaring overflows near 2^64: Math.Sqrt rounds up to 2^32 and (2^32)^2 wraps to 0.)
    /// </summary>
    public static ulong IntSqrt(ulong x)
    {
        if (x <= 1) return x;
        ulong m = 1UL << ((63 - System.Numerics.BitOperations.LeadingZeroCount(x)) & ~1);
        ulong y = 0;
        while (m != 0)
        {
            ulong b = y + m;
            y >>= 1;
            if (x >= b)
            {
                x -= b;
                y += m;
            }
            m >>= 2;
        }
        return y;
    }

    /// <summary>
    /// __setup_per_zone_wmarks: min is the zone's share of min_free_kbytes by managed pages among lowmem zones
    /// (HIGHMEM: managed/1024 clamped to [SWAP_CLUSTER_MAX, 128]); low and high each add
    /// max(min/4, managed * watermark_scale_factor / 10000); promo one more step.
    /// </summary>
    public static void SetupPerZoneWmarks(IReadOnlyList<Zone> zones, int minFreeKbytes, int watermarkScaleFactor)
    {
        long pagesMin = minFreeKbytes >> (ArchProfile.PageShift - 10);
        long lowmemPages = zones.Where(z => !z.IsHighMem).Sum(z => z.ManagedPages);
        foreach (var z in zones)
        {
            long tmp = lowmemPages == 0 ? 0 : (long)((ulong)pagesMin * (ulong)z.ManagedPages / (ulong)lowmemPages);
            if (z.IsHighMem)
                z.WmarkMin = Math.Clamp(z.ManagedPages / 1024, SwapClusterMax, 128);
            else
                z.WmarkMin = tmp;
            tmp = Math.Max(tmp >> 2, MultFrac(z.ManagedPages, watermarkScaleFactor, 10000));
            z.WatermarkBoost = 0;
            z.WmarkLow = z.WmarkMin + tmp;
            z.WmarkHigh = z.WmarkLow + tmp;
            z.WmarkPromo = z.WmarkHigh + tmp;
        }
    }

    /// <summary>The watermarks of an empty zone Linux still lists (Movable): treated as HIGHMEM-like, min = 32.</summary>
    public static (long Min, long Low, long High, long Promo) EmptyZoneWmarks(ZoneType t) =>
        t == ZoneType.Device ? (0, 0, 0, 0) : (SwapClusterMax, SwapClusterMax, SwapClusterMax, SwapClusterMax);

    /// <summary>mult_frac(x, n, d) without overflow.</summary>
    public static long MultFrac(long x, long n, long d) => x / d * n + x % d * n / d;

    /// <summary>
    /// setup_per_zone_lowmem_reserve: zone i keeps back, from an allocation whose highest zone is j &gt; i, the managed
    /// pages of zones i+1..j divided by lowmem_reserve_ratio[i] (0 when the ratio or that sum is 0).
    /// </summary>
    public static void SetupLowmemReserve(ArchProfile profile, IReadOnlyList<Zone> zones, IReadOnlyDictionary<ZoneType, int> ratios)
    {
        var all = profile.AllZones;
        long Managed(ZoneType t) => zones.FirstOrDefault(z => z.Type == t)?.ManagedPages ?? 0;
        foreach (var zone in zones)
        {
            int i = IndexOf(all, zone.Type);
            long managed = 0;
            int ratio = ratios.TryGetValue(zone.Type, out var r) ? r : 0;
            Array.Clear(zone.LowmemReserve);
            for (int j = i + 1; j < all.Count; j++)
            {
                managed += Managed(all[j]);
                zone.LowmemReserve[(int)all[j]] = ratio == 0 || managed == 0 ? 0 : managed / ratio;
            }
            zone.UpdateFastMarks();
        }
    }

    private static int IndexOf(IReadOnlyList<ZoneType> list, ZoneType t)
    {
        for (int i = 0; i < list.Count; i++) if (list[i] == t) return i;
        return -1;
    }

    /// <summary>calculate_totalreserve_pages: per zone the largest protection plus the high watermark, at most managed.</summary>
    public static long TotalReservePages(IReadOnlyList<Zone> zones)
    {
        long total = 0;
        foreach (var z in zones)
        {
            long max = z.LowmemReserve.Max() + z.WmarkHigh;
            total += Math.Min(max, z.ManagedPages);
        }
        return total;
    }

    /// <summary>The watermark an attempt with <paramref name="allocFlags"/> must pass (wmark_pages).</summary>
    public static long Mark(Zone z, AllocFlags allocFlags) => (allocFlags & AllocFlags.WmarkMask) switch
    {
        AllocFlags.WmarkMin => z.WmarkMin,
        AllocFlags.WmarkLow => z.WmarkLow,
        _ => z.WmarkHigh,
    } + z.WatermarkBoost;

    /// <summary>
    /// zone_batchsize: about 0.1% of the zone or 1 MiB, whichever is smaller, divided by 4, then rounded down to
    /// 2^n - 1 from 1.5 times that (to avoid cache aliasing between tasks); at least 1 (zone_set_pageset_high_and_batch).
    /// </summary>
    public static int ZoneBatchSize(long managedPages)
    {
        long batch = Math.Min(managedPages >> 10, (1L << 20) / ArchProfile.PageSize);
        batch /= 4;
        if (batch < 1) batch = 1;
        batch = (long)System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)(batch + batch / 2) + 1) / 2 - 1;
        return (int)Math.Max(1, batch);
    }

    /// <summary>
    /// zone_highsize: the low watermark (or managed / high_fraction) split over the node's CPUs
    /// (cpumask_weight of the node + online CPUs, which at setup time counts the node's CPUs: 2 * 0 + cpus),
    /// at least 4 batches.
    /// </summary>
    public static int ZoneHighSize(Zone z, int batch, int cpus, int highFraction)
    {
        long total = highFraction == 0 ? z.WmarkLow : z.ManagedPages / highFraction;
        long high = total / cpus;
        return (int)Math.Max(high, (long)batch << 2);
    }

    /// <summary>MIN_PERCPU_PAGELIST_HIGH_FRACTION: the default fraction for pcp->high_max.</summary>
    public const int MinPercpuPagelistHighFraction = 8;

    public static void SetupPageset(Zone z, int cpus)
    {
        int batch = ZoneBatchSize(z.ManagedPages);
        int highMin = ZoneHighSize(z, batch, cpus, 0);
        int highMax = ZoneHighSize(z, batch, cpus, MinPercpuPagelistHighFraction);
        foreach (var pcp in z.Pcp)
        {
            pcp.Batch = batch;
            pcp.HighMin = highMin;
            pcp.HighMax = highMax;
            pcp.High = highMin;
        }
    }

    /// <summary>calculate_normal_threshold: the per-CPU vmstat drift allowed before folding into the zone.</summary>
    public static int StatThreshold(Zone z, int cpus)
    {
        long mem = z.ManagedPages >> (27 - ArchProfile.PageShift);
        int threshold = 2 * Fls(cpus) * (1 + Fls((int)mem));
        return Math.Min(125, threshold);
    }

    /// <summary>fls: 1-based index of the most significant set bit, 0 for 0.</summary>
    public static int Fls(int x) => x == 0 ? 0 : 32 - System.Numerics.BitOperations.LeadingZeroCount((uint)x);
}
