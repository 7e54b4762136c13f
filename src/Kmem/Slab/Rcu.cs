namespace Kmem.Slab;

/// <summary>
/// A small, real RCU for SLAB_TYPESAFE_BY_RCU: readers mark read-side critical sections; a grace period has passed
/// once every reader that was inside a section when it began has left it.
/// </summary>
/// <remarks>
/// Design (SRCU's two-counter scheme): readers increment <c>_readers[idx]</c> for the current index and re-check
/// that the index did not flip meanwhile (so a flip is always ordered after a counted reader). A half-step waits for
/// the inactive counter to drain and flips the index. Anything queued at half-step count H is safe at H + 2: the
/// readers present at queue time were on the active or the inactive counter, and two flips drain both.
/// <see cref="Poll"/> advances without blocking (called at slab safe points: new-slab allocation and shrink);
/// <see cref="Synchronize"/> blocks (synchronize_rcu). Readers: <see cref="ReadLock"/> / <see cref="ReadUnlock"/>.
/// No managed allocation on any path.
/// </remarks>
public sealed class Rcu
{
    private readonly long[] _readers = new long[16]; // [0] and [8]: separate cache lines
    private int _idx;
    private long _halfSteps;
    private int _advancing;

    /// <summary>Completed half-steps (monotonic); a callback stamped with <see cref="Stamp"/> is ready when this reaches it.</summary>
    public long HalfSteps => Volatile.Read(ref _halfSteps);

    /// <summary>The half-step count at which something retired now is past a full grace period.</summary>
    public long Stamp() => Volatile.Read(ref _halfSteps) + 2;

    /// <summary>rcu_read_lock: returns the token to pass to <see cref="ReadUnlock"/>.</summary>
    public int ReadLock()
    {
        while (true)
        {
            int i = Volatile.Read(ref _idx);
            Interlocked.Increment(ref _readers[i * 8]);
            if (Volatile.Read(ref _idx) == i) return i;
            Interlocked.Decrement(ref _readers[i * 8]);
        }
    }

    /// <summary>rcu_read_unlock.</summary>
    public void ReadUnlock(int token) => Interlocked.Decrement(ref _readers[token * 8]);

    /// <summary>Try to complete half-steps without waiting; returns the half-step count.</summary>
    public long Poll()
    {
        if (Interlocked.CompareExchange(ref _advancing, 1, 0) != 0) return HalfSteps;
        try
        {
            for (int n = 0; n < 2; n++)
            {
                int i = _idx;
                if (Volatile.Read(ref _readers[(i ^ 1) * 8]) != 0) break;
                Volatile.Write(ref _idx, i ^ 1);
                Interlocked.Increment(ref _halfSteps);
            }
        }
        finally { Volatile.Write(ref _advancing, 0); }
        return HalfSteps;
    }

    /// <summary>synchronize_rcu: wait until a full grace period has passed.</summary>
    public void Synchronize()
    {
        long target = Stamp();
        var spin = new SpinWait();
        while (Poll() < target) spin.SpinOnce();
    }
}
