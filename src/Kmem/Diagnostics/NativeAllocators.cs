using System.Runtime.InteropServices;

namespace Kmem.Diagnostics;

/// <summary>
/// A user-space malloc to compare kmem against: a pair of native function pointers (malloc/free).
/// </summary>
public sealed unsafe class NativeAllocator
{
    /// <summary>Short name used in benchmark results: "glibc", "mimalloc", "jemalloc".</summary>
    public string Name { get; }
    /// <summary>The shared library it came from.</summary>
    public string Library { get; }
    /// <summary>malloc(size). Unmanaged calling convention (cdecl on x86-64 System V).</summary>
    public delegate* unmanaged[SuppressGCTransition]<nuint, void*> Malloc { get; }
    /// <summary>free(ptr).</summary>
    public delegate* unmanaged[SuppressGCTransition]<void*, void> Free { get; }

    internal NativeAllocator(string name, string library, delegate* unmanaged[SuppressGCTransition]<nuint, void*> malloc, delegate* unmanaged[SuppressGCTransition]<void*, void> free)
    {
        Name = name;
        Library = library;
        Malloc = malloc;
        Free = free;
    }

    public override string ToString() => $"{Name} ({Library})";
}

/// <summary>
/// Baselines for benchmarks (bench/Kmem.Benchmarks and <c>kmem bench</c>): glibc's malloc through
/// <see cref="NativeMemory"/>, and mimalloc and jemalloc loaded from their Debian shared libraries
/// (<c>apt-get install libmimalloc2.0 libjemalloc2</c>). A library that is not installed is reported as unavailable,
/// never an error. Calls go through <c>delegate* unmanaged[SuppressGCTransition]</c>: these functions are short and do
/// not call back into .NET, and skipping the GC transition (a few ns) keeps the comparison about the allocators.
/// </summary>
/// <remarks>
/// The libraries are loaded with <see cref="NativeLibrary.TryLoad(string, out nint)"/> (dlopen, RTLD_LOCAL), so they
/// do not replace the process's malloc: each pointer is freed by the allocator that made it. mimalloc is called through
/// its prefixed mi_malloc/mi_free; Debian's jemalloc exports only the unprefixed malloc/free, which dlsym on its own
/// handle resolves to jemalloc's definitions. Handles are never closed (the process keeps the library for its life).
/// </remarks>
public static unsafe class NativeAllocators
{
    private static readonly Lazy<NativeAllocator?> s_mimalloc = new(() => Load("mimalloc", "libmimalloc.so.2", "mi_malloc", "mi_free"));
    private static readonly Lazy<NativeAllocator?> s_jemalloc = new(() => Load("jemalloc", "libjemalloc.so.2", "malloc", "free"));

    /// <summary>mimalloc, or null when libmimalloc.so.2 is not installed.</summary>
    public static NativeAllocator? Mimalloc => s_mimalloc.Value;

    /// <summary>jemalloc, or null when libjemalloc.so.2 is not installed.</summary>
    public static NativeAllocator? Jemalloc => s_jemalloc.Value;

    private static readonly Lazy<NativeAllocator?> s_glibc = new(() => Load("glibc", "libc.so.6", "malloc", "free"));

    /// <summary>
    /// glibc's malloc/free called the same way as the peers (function pointers into libc.so.6), so the three compare
    /// like for like. Benchmarks also measure NativeMemory.Alloc/Free, which is what .NET code really calls.
    /// Null where libc.so.6 is not found (non-glibc systems).
    /// </summary>
    public static NativeAllocator? Glibc => s_glibc.Value;

    /// <summary>The peers found on this machine (mimalloc, jemalloc), in that order.</summary>
    public static IReadOnlyList<NativeAllocator> Peers =>
        new[] { Mimalloc, Jemalloc }.Where(a => a != null).Select(a => a!).ToList();

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> s_reasons = new();

    /// <summary>Why a peer is unavailable ("libjemalloc.so.2 not found", ...), or null when it loaded.</summary>
    public static string? UnavailableReason(string name)
    {
        _ = name switch { "mimalloc" => Mimalloc, "jemalloc" => Jemalloc, _ => Glibc };
        return s_reasons.TryGetValue(name, out var r) ? r : null;
    }

    private static NativeAllocator? Fail(string name, string reason)
    {
        s_reasons[name] = reason;
        return null;
    }

    private static NativeAllocator? Load(string name, string library, string malloc, string free)
    {
        if (!OperatingSystem.IsLinux()) return Fail(name, "not Linux");
        nint handle;
        try
        {
            handle = NativeLibrary.Load(library);
        }
        catch (DllNotFoundException e)
        {
            // Debian's jemalloc uses initial-exec TLS; once the process's static TLS is used up, dlopen fails with
            // "cannot allocate memory in static TLS block". GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384 in the
            // environment before start gives it room.
            return Fail(name, e.Message.Contains("static TLS", StringComparison.Ordinal)
                ? $"{library}: dlopen ran out of static TLS; start with GLIBC_TUNABLES=glibc.rtld.optional_static_tls=16384"
                : $"{library} not found");
        }
        if (!NativeLibrary.TryGetExport(handle, malloc, out nint m) || !NativeLibrary.TryGetExport(handle, free, out nint f))
            return Fail(name, $"{library} has no {malloc}/{free}");
        var a = new NativeAllocator(name, library, (delegate* unmanaged[SuppressGCTransition]<nuint, void*>)m, (delegate* unmanaged[SuppressGCTransition]<void*, void>)f);
        // Smoke test: one round trip, so a broken library is "unavailable" rather than a crash mid-benchmark.
        void* p = a.Malloc(64);
        if (p == null) return Fail(name, $"{library}: {malloc}(64) returned NULL");
        *(long*)p = 42;
        a.Free(p);
        return a;
    }
}
