using System.Buffers;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kmem.Diagnostics;

namespace Kmem.Benchmarks;

/// <summary>
/// The user-space baselines every benchmark class can put beside kmem in the same run: glibc malloc through
/// NativeMemory (what .NET code calls) and through a function pointer into libc.so.6 (called exactly as the peers
/// are), mimalloc and jemalloc (NativeAllocators; a missing one makes its method a no-op and is printed as
/// unavailable), ArrayPool&lt;byte&gt;.Shared, and new byte[n].
/// </summary>
public static unsafe class Baselines
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void NativeMemoryPair(nuint size) => NativeMemory.Free(NativeMemory.Alloc(size));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Pair(NativeAllocator? a, nuint size)
    {
        if (a == null) return;
        a.Free(a.Malloc(size));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void ArrayPoolPair(int size)
    {
        var pool = ArrayPool<byte>.Shared;
        pool.Return(pool.Rent(size));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static byte[] NewArray(int size) => new byte[size];

    /// <summary>Print which peers are available (once per process).</summary>
    public static void Announce()
    {
        if (s_announced) return;
        s_announced = true;
        foreach (var a in new[] { "glibc", "mimalloc", "jemalloc" })
            Console.WriteLine($"// baseline {a}: {(NativeAllocators.UnavailableReason(a) is { } r ? "UNAVAILABLE, " + r : "available")}");
    }

    private static bool s_announced;
}
