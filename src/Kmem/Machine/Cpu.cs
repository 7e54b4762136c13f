using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// "Which CPU am I on": the calling thread's current processor folded onto the machine's CPUs, unless the thread
/// pinned itself to a CPU with <see cref="Pin"/> (the analogue of running a kernel thread bound to one CPU, and
/// what tests use to make per-CPU behaviour deterministic).
/// </summary>
public static class Cpu
{
    [ThreadStatic] private static int t_pinnedPlusOne;

    /// <summary>The CPU index for per-CPU data of a machine with <paramref name="cpuCount"/> CPUs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Current(int cpuCount)
    {
        int pinned = t_pinnedPlusOne - 1;
        if (pinned >= 0) return pinned < cpuCount ? pinned : pinned % cpuCount;
        // The division only when the host has more processors than the machine has CPUs.
        uint id = (uint)Thread.GetCurrentProcessorId();
        return (int)(id < (uint)cpuCount ? id : id % (uint)cpuCount);
    }

    /// <summary>The CPU this thread is pinned to, or -1.</summary>
    public static int Pinned => t_pinnedPlusOne - 1;

    /// <summary>Pin the calling thread to <paramref name="cpu"/> until the returned scope is disposed.</summary>
    public static PinScope Pin(int cpu)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(cpu);
        int previous = t_pinnedPlusOne;
        t_pinnedPlusOne = cpu + 1;
        return new PinScope(previous);
    }

    public readonly struct PinScope : IDisposable
    {
        private readonly int _previous;
        internal PinScope(int previous) => _previous = previous;
        public void Dispose() => t_pinnedPlusOne = _previous;
    }
}
