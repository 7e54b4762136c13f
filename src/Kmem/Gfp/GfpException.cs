namespace Kmem;

/// <summary>
/// A GFP mask Linux rejects: an invalid zone-modifier combination (gfp_zone()'s VM_BUG_ON on GFP_ZONE_BAD) or
/// both mobility bits at once (gfp_migratetype()'s VM_WARN_ON). Linux only checks these under CONFIG_DEBUG_VM;
/// kmem always checks, because a wrong zone or migratetype silently corrupts the free-list accounting.
/// </summary>
public sealed class GfpException : KmemException
{
    /// <summary>An error about <paramref name="flags"/>; the caller puts the formatted flags in both texts.</summary>
    public GfpException(Gfp flags, string message, string report)
        : base(message, report)
    {
        Flags = flags;
    }

    /// <summary>The offending mask, as passed by the caller.</summary>
    public Gfp Flags { get; }
}
