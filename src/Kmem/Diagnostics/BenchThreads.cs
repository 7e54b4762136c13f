using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Diagnostics;

/// <summary>
/// A benchmark worker: one thread, created once and bound to one kmem CPU, that runs a job per <see cref="Start"/>.
/// Used by <c>kmem bench</c> and bench/Kmem.Benchmarks for their two-thread cases.
/// </summary>
/// <remarks>
/// Persistent, because a thread made per measurement would measure thread start-up, a cold sheaf table and
/// first-call code instead of the allocator (a version that did reported 40 ns per kmalloc pair against 14.5). The
/// wake-up (~10-50 µs) is noise against a round of tens of milliseconds.
/// </remarks>
public sealed class BenchWorker : IDisposable
{
    private readonly SemaphoreSlim _go = new(0);
    private readonly SemaphoreSlim _done = new(0);
    private readonly Thread _thread;
    private Action<long>? _job;
    private long _n;
    private bool _stop;

    /// <summary>A worker whose thread runs on kmem CPU <paramref name="cpu"/>'s per-CPU data.</summary>
    public BenchWorker(int cpu)
    {
        _thread = new Thread(() =>
        {
            using var pin = Cpu.Pin(cpu);
            while (true)
            {
                _go.Wait();
                if (_stop) return;
                _job!(_n);
                _done.Release();
            }
        }) { IsBackground = true, Name = $"kmem bench worker {cpu}" };
        _thread.Start();
    }

    /// <summary>Run <paramref name="job"/>(<paramref name="n"/>) on the worker; <see cref="Wait"/> for it.</summary>
    public void Start(Action<long> job, long n)
    {
        _job = job;
        _n = n;
        _go.Release();
    }

    /// <summary>Wait for the job <see cref="Start"/> began.</summary>
    public void Wait() => _done.Wait();

    public void Dispose()
    {
        _stop = true;
        _go.Release();
        _thread.Join();
        _go.Dispose();
        _done.Dispose();
    }
}

/// <summary>
/// A single-producer single-consumer ring of addresses, for a producer/consumer benchmark (one thread frees what
/// the other allocated). Each side keeps the last index it saw of the other and reads the other's cache line again
/// only when that copy says full (or empty), and the two indices sit on lines of their own, so the ring costs a line
/// transfer per 8 slots rather than per item and the benchmark measures the allocator's cross-CPU free, not the
/// ring (a version with both indices on one line, read on every item, reported 115-319 ns per object instead of
/// ~35). Waiting spins, then yields: on a shared machine the other thread may not be running at all.
/// </summary>
public sealed class HandoffRing
{
    private const int Slots = 1024;
    private readonly nint[] _ring = new nint[Slots];
    private Indices _idx;

    [StructLayout(LayoutKind.Explicit, Size = 192)]
    private struct Indices
    {
        [FieldOffset(64)] public long Head;      // the producer's line: written by it only
        [FieldOffset(72)] public long TailSeen;  // the producer's last read of Tail
        [FieldOffset(128)] public long Tail;     // the consumer's line: written by it only
        [FieldOffset(136)] public long HeadSeen; // the consumer's last read of Head
    }

    /// <summary>Empty the ring before a producer and a consumer start (neither may be running).</summary>
    public void Reset() => _idx = default;

    /// <summary>Producer only: append <paramref name="p"/>, waiting while the ring is full.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Push(nint p)
    {
        long head = _idx.Head;
        if (head - _idx.TailSeen >= Slots) WaitForRoom(head);
        _ring[head & (Slots - 1)] = p;
        Volatile.Write(ref _idx.Head, head + 1);
    }

    /// <summary>Consumer only: the oldest address, waiting while the ring is empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public nint Pop()
    {
        long tail = _idx.Tail;
        if (tail == _idx.HeadSeen) WaitForItem(tail);
        nint p = _ring[tail & (Slots - 1)];
        Volatile.Write(ref _idx.Tail, tail + 1);
        return p;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WaitForRoom(long head)
    {
        var spin = new SpinWait();
        while (head - (_idx.TailSeen = Volatile.Read(ref _idx.Tail)) >= Slots) spin.SpinOnce();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WaitForItem(long tail)
    {
        var spin = new SpinWait();
        while (tail == (_idx.HeadSeen = Volatile.Read(ref _idx.Head))) spin.SpinOnce();
    }
}
