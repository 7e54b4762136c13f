namespace Kmem.Tracing;

/// <summary>
/// Keeps the trace pipeline's large buffers (read-ahead chunks and event batches, megabytes each) for the next reader
/// or pipeline of the process. <c>kmem replay</c> reads its trace twice, a sizing pass and then the replay; fresh
/// large-object-heap arrays for the second read (~30 MB) made the GC collect at the replay's start, 2-6 ms inside its
/// clock before the parse thread ran. At most <see cref="MaxKept"/> arrays of each element type are kept, so a
/// process holds ~30 MB after its first trace; arrays come back uninitialized (their users write before they read).
/// </summary>
internal static class LargeBufferCache<T>
{
    /// <summary>A read-ahead stream's or a pipeline's full set, for one reader at a time.</summary>
    public const int MaxKept = 4;

    private static readonly Lock s_gate = new();
    private static readonly List<T[]> s_kept = new(MaxKept);

    /// <summary>A kept array of exactly <paramref name="length"/> elements, else a new uninitialized one.</summary>
    public static T[] Rent(int length)
    {
        lock (s_gate)
        {
            for (int i = s_kept.Count - 1; i >= 0; i--)
            {
                T[] a = s_kept[i];
                if (a.Length == length)
                {
                    s_kept.RemoveAt(i);
                    return a;
                }
            }
        }
        return GC.AllocateUninitializedArray<T>(length);
    }

    /// <summary>Gives <paramref name="array"/> back; its previous owner must not touch it again.</summary>
    public static void Return(T[]? array)
    {
        if (array is null)
            return;
        lock (s_gate)
        {
            if (s_kept.Count < MaxKept)
                s_kept.Add(array);
        }
    }
}
