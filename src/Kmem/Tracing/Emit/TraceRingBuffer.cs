using System.Runtime.InteropServices;

namespace Kmem.Tracing.Emit;

/// <summary>What a full per-CPU buffer does, as ftrace's <c>overwrite</c> option.</summary>
public enum RingMode
{
    /// <summary>Overwrite the oldest events (ftrace's default, options/overwrite = 1); the overwritten count as lost.</summary>
    Overwrite,
    /// <summary>Keep the oldest and drop new events (options/overwrite = 0); the dropped count as lost.</summary>
    Stop,
}

/// <summary>
/// Per-CPU ring buffers of <see cref="TraceRecord"/> in native memory (ftrace's ring_buffer, without pages).
/// 1. Reservation: a writer takes a slot with one Interlocked.Increment on its CPU's write counter (threads folded
///    onto one CPU index share it safely); slot = counter mod capacity. Stop mode refuses counters past capacity.
/// 2. Lost events: Stop counts refused records; Overwrite counts records overwritten (written - capacity).
/// 3. Reading (<see cref="Snapshot"/>) is meant for a quiescent buffer (tracing stopped or the job finished): a
///    record written concurrently with the snapshot may be torn, as ftrace's non-consuming read may miss one.
/// </summary>
public sealed unsafe class TraceRingBuffer : IDisposable
{
    private readonly TraceRecord*[] _cpus;
    private readonly long[] _written; // per CPU, padded by 8 longs to keep CPUs off one cache line
    private const int Pad = 8;

    /// <summary>Buffers of <paramref name="recordsPerCpu"/> records for <paramref name="cpus"/> CPUs.</summary>
    public TraceRingBuffer(int cpus, int recordsPerCpu, RingMode mode = RingMode.Overwrite)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(cpus, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(recordsPerCpu, 1);
        Cpus = cpus;
        Capacity = recordsPerCpu;
        Mode = mode;
        _cpus = new TraceRecord*[cpus];
        _written = new long[cpus * Pad];
        for (int i = 0; i < cpus; i++)
            _cpus[i] = (TraceRecord*)NativeMemory.AllocZeroed((nuint)recordsPerCpu, (nuint)sizeof(TraceRecord));
    }

    public int Cpus { get; }
    public int Capacity { get; }
    public RingMode Mode { get; }

    /// <summary>Records offered to CPU <paramref name="cpu"/>'s buffer.</summary>
    public long Written(int cpu) => Volatile.Read(ref _written[cpu * Pad]);

    /// <summary>Records lost on CPU <paramref name="cpu"/> (overwritten or refused).</summary>
    public long Lost(int cpu) => Math.Max(0, Written(cpu) - Capacity);

    /// <summary>Records lost on all CPUs.</summary>
    public long TotalLost
    {
        get
        {
            long n = 0;
            for (int c = 0; c < Cpus; c++) n += Lost(c);
            return n;
        }
    }

    /// <summary>Stores <paramref name="r"/> on its CPU's buffer.</summary>
    public void Write(in TraceRecord r)
    {
        int cpu = r.Cpu < Cpus ? r.Cpu : r.Cpu % Cpus;
        long n = Interlocked.Increment(ref _written[cpu * Pad]) - 1;
        if (n >= Capacity && Mode == RingMode.Stop) return;
        _cpus[cpu][n % Capacity] = r;
    }

    /// <summary>The records kept, per CPU oldest first, merged by timestamp.</summary>
    public List<TraceRecord> Snapshot()
    {
        var all = new List<TraceRecord>();
        for (int c = 0; c < Cpus; c++)
        {
            long w = Written(c);
            long kept = Math.Min(w, Capacity);
            long first = Mode == RingMode.Stop ? 0 : w - kept;
            for (long i = 0; i < kept; i++) all.Add(_cpus[c][(first + i) % Capacity]);
        }
        all.Sort((x, y) => x.Ticks.CompareTo(y.Ticks));
        return all;
    }

    /// <summary>Empties every buffer.</summary>
    public void Reset()
    {
        for (int c = 0; c < Cpus; c++) Volatile.Write(ref _written[c * Pad], 0);
    }

    public void Dispose()
    {
        for (int i = 0; i < _cpus.Length; i++)
        {
            NativeMemory.Free(_cpus[i]);
            _cpus[i] = null;
        }
    }
}
