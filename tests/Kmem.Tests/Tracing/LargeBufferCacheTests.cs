using Kmem.Tracing;

namespace Kmem.Tests.Tracing;

/// <summary>
/// The cache that lets a replay's second read of its trace reuse the first read's chunks and batches. Each test uses
/// an element type of its own: the cache is static per type, and the readers of other tests share byte's and
/// TraceEvent's.
/// </summary>
public class LargeBufferCacheTests
{
    private readonly record struct A(long X);
    private readonly record struct B(long X);

    [Fact]
    public void A_returned_array_comes_back_for_the_same_length_only()
    {
        A[] first = LargeBufferCache<A>.Rent(1000);
        Assert.Equal(1000, first.Length);
        LargeBufferCache<A>.Return(first);
        A[] other = LargeBufferCache<A>.Rent(999);
        Assert.NotSame(first, other);
        Assert.Same(first, LargeBufferCache<A>.Rent(1000));
        Assert.NotSame(first, LargeBufferCache<A>.Rent(1000)); // taken: a new one
    }

    [Fact]
    public void At_most_MaxKept_arrays_are_kept()
    {
        var arrays = Enumerable.Range(0, LargeBufferCache<B>.MaxKept + 2).Select(_ => LargeBufferCache<B>.Rent(64)).ToList();
        Assert.Equal(arrays.Count, arrays.Distinct().Count());
        foreach (B[] a in arrays)
            LargeBufferCache<B>.Return(a);
        LargeBufferCache<B>.Return(null);
        var again = Enumerable.Range(0, LargeBufferCache<B>.MaxKept + 2).Select(_ => LargeBufferCache<B>.Rent(64)).ToList();
        Assert.Equal(LargeBufferCache<B>.MaxKept, again.Count(arrays.Contains));
    }
}
