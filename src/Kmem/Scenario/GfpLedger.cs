namespace Kmem.Scenario;

/// <summary>
/// Per GFP type: how many allocations a scenario asked for, how many failed, and how long callers of that type were
/// blocked in reclaim (taken from the reclaimer's stall accounting for the exact masks the type used).
/// </summary>
public sealed class GfpLedger
{
    public sealed class Entry
    {
        public string Name { get; init; } = "";
        public long Allocations;
        public long Failures;
        public double BlockedMs;
        /// <summary>Allocations made in process context, in softirq, in hardirq, and in other atomic context (spinlock held, irqs or preemption off).</summary>
        public long InProcess, InSoftirq, InHardirq, InOtherAtomic;
        internal readonly HashSet<Gfp> Masks = new();
    }

    private readonly List<Entry> _entries = new();
    private readonly Dictionary<string, Entry> _byName = new(StringComparer.Ordinal);

    public IReadOnlyList<Entry> Entries => _entries;

    /// <summary>The entry for a type, registering <paramref name="mask"/> as one of the masks it uses.</summary>
    public Entry For(string name, Gfp mask)
    {
        lock (_entries)
        {
            if (!_byName.TryGetValue(name, out var e))
            {
                e = new Entry { Name = name };
                _byName[name] = e;
                _entries.Add(e);
            }
            e.Masks.Add(mask);
            return e;
        }
    }

    /// <summary>Count one allocation, and the context it was made in (read from the calling thread's preempt_count).</summary>
    public static void Count(Entry e, bool ok)
    {
        Interlocked.Increment(ref e.Allocations);
        if (!ok) Interlocked.Increment(ref e.Failures);
        if (Context.InHardirq) Interlocked.Increment(ref e.InHardirq);
        else if (Context.InSoftirq) Interlocked.Increment(ref e.InSoftirq);
        else if (Context.InAtomic || Context.IrqsDisabled) Interlocked.Increment(ref e.InOtherAtomic);
        else Interlocked.Increment(ref e.InProcess);
    }

    /// <summary>Count <paramref name="n"/> allocations made in process context (e.g. page faults summed afterwards).</summary>
    public static void CountProcess(Entry e, long n, long failures = 0)
    {
        Interlocked.Add(ref e.Allocations, n);
        Interlocked.Add(ref e.Failures, failures);
        Interlocked.Add(ref e.InProcess, n);
    }

    /// <summary>Fill <see cref="Entry.BlockedMs"/> from the reclaimer's per-mask stall times.</summary>
    public void CollectBlocked(Machine m)
    {
        var stalls = m.Reclaim.Stalls;
        lock (_entries)
            foreach (var e in _entries)
                e.BlockedMs = e.Masks.Sum(g => stalls.TryGetValue(g, out var s) ? s.BlockedMs : 0);
    }
}
