namespace Kmem.Reclaim;

/// <summary>What a shrinker needs to be allowed to run (kmem's declaration of what Linux shrinkers check themselves).</summary>
[Flags]
public enum ShrinkerFlags
{
    None = 0,
    /// <summary>Filesystem shrinker (dentry/inode caches, super_cache_scan): skipped without __GFP_FS.</summary>
    NeedsFs = 1,
    /// <summary>Shrinker that must start I/O: skipped without __GFP_IO.</summary>
    NeedsIo = 2,
}

/// <summary>struct shrink_control: what one call asks for.</summary>
public sealed class ShrinkControl
{
    public Gfp Gfp { get; internal set; }
    /// <summary>Objects to scan in this call (at most the shrinker's batch).</summary>
    public long NrToScan { get; internal set; }
    /// <summary>Objects the scan callback looked at (defaults to NrToScan).</summary>
    public long NrScanned { get; set; }
    /// <summary>reclaim_state->reclaimed: pages the callback gave back to the page allocator.</summary>
    public long PagesFreed { get; set; }
}

/// <summary>
/// A registered shrinker (register_shrinker / shrinker_alloc + shrinker_register): count_objects reports freeable
/// objects, scan_objects frees up to NrToScan of them and returns how many it freed, or <see cref="Stop"/>.
/// Reclaim calls it in proportion to pressure: per pass it asks for (freeable &gt;&gt; priority) * 4 / seeks objects, in
/// batches of <see cref="BatchSize"/> (do_shrink_slab).
/// </summary>
public sealed class Shrinker
{
    /// <summary>SHRINK_STOP.</summary>
    public const long Stop = -1;
    /// <summary>SHRINK_BATCH.</summary>
    public const int DefaultBatch = 128;
    /// <summary>DEFAULT_SEEKS: the cost to recreate an object, relative to a page-cache page.</summary>
    public const int DefaultSeeks = 2;

    internal long Deferred;
    internal long Calls;
    internal long Freed;

    public string Name { get; }
    public Func<ShrinkControl, long> CountObjects { get; }
    public Func<ShrinkControl, long> ScanObjects { get; }
    public ShrinkerFlags Flags { get; }
    public int Seeks { get; init; } = DefaultSeeks;
    public int BatchSize { get; init; } = DefaultBatch;
    /// <summary>scan_objects calls so far.</summary>
    public long ScanCalls => Interlocked.Read(ref Calls);
    /// <summary>Objects freed so far.</summary>
    public long ObjectsFreed => Interlocked.Read(ref Freed);

    public Shrinker(string name, Func<ShrinkControl, long> count, Func<ShrinkControl, long> scan, ShrinkerFlags flags = ShrinkerFlags.None)
    {
        Name = name;
        CountObjects = count;
        ScanObjects = scan;
        Flags = flags;
    }

    /// <summary>May this shrinker run under <paramref name="gfp"/>?</summary>
    public bool AllowedBy(Gfp gfp) =>
        ((Flags & ShrinkerFlags.NeedsFs) == 0 || (gfp & Gfp.Fs) != 0) &&
        ((Flags & ShrinkerFlags.NeedsIo) == 0 || (gfp & Gfp.Io) != 0);
}
