using System.Collections.Concurrent;
using Kmem.Slab;

namespace Kmem.Scenario;

/// <summary>
/// Slab traffic for <c>kmem run</c>: a dentry-like and an inode-like cache with constructors (SLAB_RECLAIM_ACCOUNT)
/// and kmalloc requests whose sizes follow the kmalloc events of the shared forkexec trace (bytes_req weights), from
/// several threads; a third of the kmalloc objects are freed by another thread. Every object carries a pattern
/// checked before it is freed.
/// </summary>
public sealed unsafe class SlabWorkload
{
    /// <summary>(bytes_req, weight): the most frequent requests of forkexec.trace (200 fork/exec rounds), rounded counts.</summary>
    public static readonly (int Size, int Weight)[] KmallocSizes =
    [
        (52, 2400), (53, 1400), (64, 1206), (11, 1205), (72, 774), (728, 603), (504, 603), (408, 603), (28, 603),
        (56, 602), (2048, 602), (59, 400), (54, 400), (32, 373), (68, 200), (57, 200), (4096, 200), (40, 40), (112, 21),
        (176, 5), (16600, 2),
    ];

    public long OperationsPerThread { get; init; } = 200_000;
    public int MaxLivePerThread { get; init; } = 20_000;
    public int Seed { get; init; } = 1;
    public Action? AtPeak { get; init; }
    public long Errors;
    private long _done;
    public long Done => Interlocked.Read(ref _done);
    public long Total(int threads) => OperationsPerThread * threads;

    public KmemCache? Dentry { get; private set; }
    public KmemCache? Inode { get; private set; }
    public long DentryCtorCalls;
    public long InodeCtorCalls;

    public void Run(Machine m, int threads)
    {
        Dentry = m.Slab.CreateCache("dentry_like", 192, 0, SlabFlags.ReclaimAccount | SlabFlags.HwcacheAlign,
            p => { Interlocked.Increment(ref DentryCtorCalls); new Span<byte>((void*)p, 192).Clear(); });
        Inode = m.Slab.CreateCache("inode_like", 600, 0, SlabFlags.ReclaimAccount | SlabFlags.HwcacheAlign | SlabFlags.Account,
            p => { Interlocked.Increment(ref InodeCtorCalls); new Span<byte>((void*)p, 600).Clear(); });
        var handoff = new ConcurrentQueue<(nint P, int Size, long Tag)>();
        using var barrier = new Barrier(threads, _ => AtPeak?.Invoke());
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() => Worker(m, id, barrier, handoff)) { Name = $"kworker/s{id}", IsBackground = true };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        while (handoff.TryDequeue(out var h)) FreeChecked(m, null, h.P, h.Size, h.Tag);
    }

    private void Worker(Machine m, int id, Barrier barrier, ConcurrentQueue<(nint P, int Size, long Tag)> handoff)
    {
        using var pin = Cpu.Pin(id % m.CpuCount);
        var rng = new Random(Seed * 7919 + id);
        int totalWeight = KmallocSizes.Sum(s => s.Weight);
        var live = new List<(nint P, int Size, long Tag, KmemCache? Cache)>();
        long serial = 0;
        for (long op = 0; op < OperationsPerThread; op++)
        {
            bool grow = live.Count < MaxLivePerThread && (op < OperationsPerThread / 2 ? rng.Next(100) < 65 : rng.Next(100) < 45);
            if (grow || live.Count == 0)
            {
                int kind = rng.Next(10);
                KmemCache? cache = kind == 0 ? Dentry : kind == 1 ? Inode : null;
                int size;
                nint p;
                if (cache != null)
                {
                    size = cache.ObjectSize;
                    p = (nint)cache.Alloc(Gfp.Kernel);
                }
                else
                {
                    int w = rng.Next(totalWeight);
                    size = KmallocSizes[^1].Size;
                    foreach (var (s, weight) in KmallocSizes)
                    {
                        if (w < weight) { size = s; break; }
                        w -= weight;
                    }
                    p = (nint)m.Slab.Kmalloc((nuint)size, Gfp.Kernel);
                }
                if (p == 0) { Interlocked.Increment(ref Errors); continue; }
                long tag = ((long)(id + 1) << 48) | ++serial;
                Fill(p, size, tag);
                live.Add((p, size, tag, cache));
            }
            else
            {
                int i = rng.Next(live.Count);
                var (p, size, tag, cache) = live[i];
                live[i] = live[^1];
                live.RemoveAt(live.Count - 1);
                if (cache == null && rng.Next(3) == 0) handoff.Enqueue((p, size, tag));
                else FreeChecked(m, cache, p, size, tag);
            }
            if (handoff.TryDequeue(out var h)) FreeChecked(m, null, h.P, h.Size, h.Tag);
            if (op == OperationsPerThread / 2) barrier.SignalAndWait();
            Interlocked.Increment(ref _done);
        }
        foreach (var (p, size, tag, cache) in live) FreeChecked(m, cache, p, size, tag);
    }

    private static void Fill(nint p, int size, long tag)
    {
        for (int i = 0; i + 8 <= size; i += 8) *(long*)(p + i) = tag ^ i;
    }

    private void FreeChecked(Machine m, KmemCache? cache, nint p, int size, long tag)
    {
        for (int i = 0; i + 8 <= size; i += 8)
            if (*(long*)(p + i) != (tag ^ i)) { Interlocked.Increment(ref Errors); break; }
        // Leave constructed state behind, as a real user of a constructor cache must.
        if (cache != null) new Span<byte>((void*)p, size).Clear();
        if (cache != null) cache.Free((void*)p); else m.Slab.Kfree((void*)p);
    }
}
