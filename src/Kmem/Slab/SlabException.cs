namespace Kmem.Slab;

/// <summary>
/// A slab report: a bad free (invalid pointer, object already free, wrong cache), a kmem_cache_destroy with live
/// objects, or a SLAB_PANIC creation failure. <see cref="KmemException.Report"/> holds the text Linux would log.
/// The allocator's state is unchanged when this is thrown.
/// </summary>
public sealed class SlabException : KmemException
{
    public SlabException(string message, string report) : base(message, report) { }
}
