namespace Kmem.Slab;

/// <summary>
/// Cache creation flags (Linux's <c>slab_flags_t</c>, include/linux/slab.h). The bit values are the fixed ones
/// Linux used before 6.8 turned them into an enum of bit numbers (the names and meanings did not change).
/// </summary>
[Flags]
public enum SlabFlags : uint
{
    None = 0,
    /// <summary>SLAB_CONSISTENCY_CHECKS: expensive checks on alloc/free (accepted; the checks come with the debugging issue).</summary>
    ConsistencyChecks = 0x00000100,
    /// <summary>SLAB_RED_ZONE: red zones around each object (0xbb inactive, 0xcc active).</summary>
    RedZone = 0x00000400,
    /// <summary>SLAB_POISON: poison free objects (0x6b, last byte 0xa5).</summary>
    Poison = 0x00000800,
    /// <summary>SLAB_KMALLOC: a kmalloc cache (internal).</summary>
    Kmalloc = 0x00001000,
    /// <summary>SLAB_HWCACHE_ALIGN: align objects on cache lines (calculate_alignment).</summary>
    HwcacheAlign = 0x00002000,
    /// <summary>SLAB_CACHE_DMA: slabs from ZONE_DMA (GFP_DMA).</summary>
    CacheDma = 0x00004000,
    /// <summary>SLAB_CACHE_DMA32: slabs from ZONE_DMA32.</summary>
    CacheDma32 = 0x00008000,
    /// <summary>SLAB_STORE_USER: alloc/free tracks after each object.</summary>
    StoreUser = 0x00010000,
    /// <summary>SLAB_RECLAIM_ACCOUNT: slabs are __GFP_RECLAIMABLE and counted as SReclaimable.</summary>
    ReclaimAccount = 0x00020000,
    /// <summary>SLAB_PANIC: a creation failure panics (here: throws <see cref="SlabException"/>).</summary>
    Panic = 0x00040000,
    /// <summary>SLAB_TYPESAFE_BY_RCU: slab pages go back to the page allocator only after an RCU grace period.</summary>
    TypesafeByRcu = 0x00080000,
    /// <summary>SLAB_TRACE (accepted; never merges).</summary>
    Trace = 0x00200000,
    /// <summary>SLAB_NOLEAKTRACE (accepted; never merges).</summary>
    NoLeakTrace = 0x00800000,
    /// <summary>SLAB_NO_MERGE: never merge with another cache.</summary>
    NoMerge = 0x01000000,
    /// <summary>SLAB_FAILSLAB (accepted; never merges).</summary>
    FailSlab = 0x02000000,
    /// <summary>SLAB_ACCOUNT: objects are charged to a memory cgroup (kmem has none: only merging looks at it).</summary>
    Account = 0x04000000,

    /// <summary>SLAB_NEVER_MERGE (mm/slab_common.c).</summary>
    NeverMerge = RedZone | Poison | StoreUser | Trace | TypesafeByRcu | NoLeakTrace | FailSlab | NoMerge,
    /// <summary>SLAB_MERGE_SAME (mm/slab_common.c): flags two caches must agree on to merge.</summary>
    MergeSame = ReclaimAccount | CacheDma | CacheDma32 | Account,
    /// <summary>SLAB_DEBUG_FLAGS with metadata: the flags that change the object layout.</summary>
    DebugMetadata = RedZone | Poison | StoreUser,
}

/// <summary>Parsing and printing of <see cref="SlabFlags"/> in Linux's spelling (hwcache_align, reclaim_account, ...).</summary>
public static class SlabFlagNames
{
    private static readonly (string Name, SlabFlags Flag)[] s_names =
    [
        ("consistency_checks", SlabFlags.ConsistencyChecks), ("red_zone", SlabFlags.RedZone), ("poison", SlabFlags.Poison),
        ("hwcache_align", SlabFlags.HwcacheAlign), ("cache_dma", SlabFlags.CacheDma), ("cache_dma32", SlabFlags.CacheDma32),
        ("store_user", SlabFlags.StoreUser), ("reclaim_account", SlabFlags.ReclaimAccount), ("panic", SlabFlags.Panic),
        ("typesafe_by_rcu", SlabFlags.TypesafeByRcu), ("trace", SlabFlags.Trace), ("noleaktrace", SlabFlags.NoLeakTrace),
        ("no_merge", SlabFlags.NoMerge), ("failslab", SlabFlags.FailSlab), ("account", SlabFlags.Account), ("kmalloc", SlabFlags.Kmalloc),
    ];

    /// <summary>Parse a comma-separated list (names with or without the SLAB_ prefix, any case).</summary>
    public static SlabFlags Parse(string text)
    {
        SlabFlags f = 0;
        foreach (var raw in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            string n = raw.ToLowerInvariant();
            if (n.StartsWith("slab_", StringComparison.Ordinal)) n = n[5..];
            int i = Array.FindIndex(s_names, e => e.Name == n);
            if (i < 0) throw new ArgumentException($"unknown slab flag '{raw}' (have: {string.Join(", ", s_names.Select(e => e.Name))})");
            f |= s_names[i].Flag;
        }
        return f;
    }

    public static string Format(SlabFlags f)
    {
        var parts = s_names.Where(e => (f & e.Flag) != 0).Select(e => "SLAB_" + e.Name.ToUpperInvariant());
        string s = string.Join('|', parts);
        return s.Length == 0 ? "0" : s;
    }
}
