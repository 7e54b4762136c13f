using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace Kmem.Tracing;

/*
 * NativeZstdStream: zstd decompression through the system's libzstd (Debian's libzstd1, a required package).
 *
 * Why: replay must parse >= 2 M events/s from .zst on two cores, where every µs of CPU counts, and managed ZstdSharp
 * takes ~1.2-1.25x libzstd's CPU per byte on the real traces (0.14 vs 0.11 µs per event; docs/benchmarks.md,
 * "Replay"). Where libzstd.so.1 cannot be loaded the reader falls back to ZstdSharp (FtraceReaderOptions.Zstd,
 * ZstdDecoder.Auto); both give the same bytes and the same errors.
 *
 * Unsafe invariants:
 *  - The ZSTD_DStream is owned by one ZstdDStreamHandle (a SafeHandle): freed exactly once, by Dispose or the
 *    finalizer, and never while a call is using it (the SafeHandle marshaller holds a reference across each call).
 *  - Pointers passed to libzstd point into `fixed` buffers (the caller's span, _input) and are used only during the
 *    ZSTD_decompressStream call they are passed to; libzstd keeps no pointer to our memory between calls (its window
 *    and buffers are its own allocations).
 *  - ZSTD_inBuffer / ZSTD_outBuffer are laid out as in zstd.h (three pointer-sized fields) and their pos fields are
 *    only ever advanced by libzstd within [0, size], so (int) casts of them are within the buffers' lengths.
 *  - Calls are blocking and long (up to a buffer-full of output), so they keep the GC transition.
 */

/// <summary>Which zstd decompressor a <see cref="FtraceReader"/> uses.</summary>
public enum ZstdDecoder
{
    /// <summary>libzstd when it can be loaded, else ZstdSharp.</summary>
    Auto,
    /// <summary>The system's libzstd.so.1; an error when it cannot be loaded.</summary>
    Native,
    /// <summary>ZstdSharp (managed, always available).</summary>
    Managed,
}

/// <summary>The libzstd entry points kmem uses, and whether the library is present.</summary>
internal static unsafe partial class ZstdNative
{
    public const string Library = "libzstd.so.1";

    // ZSTD_decompressStream and friends are stable API since zstd 1.0 (2016); the floor guards against a library that
    // is named libzstd.so.1 but is something else.
    private const uint MinVersion = 1_00_00; // ZSTD_VERSION_NUMBER: major * 10000 + minor * 100 + release

    private static readonly Lazy<(bool Ok, string Description)> s_probe = new(() => Probe(Library));

    /// <summary>True when libzstd.so.1 loads and has every entry point used here.</summary>
    public static bool IsAvailable => s_probe.Value.Ok;

    /// <summary>"libzstd 1.5.4" when available, else why not ("libzstd.so.1 not found").</summary>
    public static string Description => s_probe.Value.Description;

    /// <summary>Loads <paramref name="library"/> and checks its exports and version (the imports below bind to <see cref="Library"/>).</summary>
    internal static (bool Ok, string Description) Probe(string library)
    {
        if (!NativeLibrary.TryLoad(library, typeof(ZstdNative).Assembly, null, out nint handle))
            return (false, $"{library} not found");
        foreach (string name in (ReadOnlySpan<string>)["ZSTD_createDStream", "ZSTD_initDStream", "ZSTD_decompressStream",
            "ZSTD_freeDStream", "ZSTD_isError", "ZSTD_getErrorName", "ZSTD_DStreamInSize"])
        {
            if (!NativeLibrary.TryGetExport(handle, name, out _))
                return (false, $"{library} has no {name}");
        }
        if (!NativeLibrary.TryGetExport(handle, "ZSTD_versionNumber", out nint versionNumber))
            return (false, $"{library} has no ZSTD_versionNumber");
        uint v = ((delegate* unmanaged<uint>)versionNumber)();
        string version = $"{v / 10000}.{v / 100 % 100}.{v % 100}";
        return v < MinVersion ? (false, $"{library} is version {version}") : (true, $"libzstd {version}");
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct InBuffer
    {
        public byte* Src;
        public nuint Size;
        public nuint Pos;
    }

    [StructLayout(LayoutKind.Sequential)]
    public struct OutBuffer
    {
        public byte* Dst;
        public nuint Size;
        public nuint Pos;
    }

    [LibraryImport(Library)]
    public static partial ZstdDStreamHandle ZSTD_createDStream();

    [LibraryImport(Library)]
    public static partial nuint ZSTD_freeDStream(nint zds);

    [LibraryImport(Library)]
    public static partial nuint ZSTD_initDStream(ZstdDStreamHandle zds);

    [LibraryImport(Library)]
    public static partial nuint ZSTD_decompressStream(ZstdDStreamHandle zds, OutBuffer* output, InBuffer* input);

    [LibraryImport(Library)]
    public static partial uint ZSTD_isError(nuint code);

    [LibraryImport(Library)]
    public static partial byte* ZSTD_getErrorName(nuint code);

    [LibraryImport(Library)]
    public static partial nuint ZSTD_DStreamInSize();

    public static string ErrorName(nuint code) => Marshal.PtrToStringUTF8((nint)ZSTD_getErrorName(code)) ?? "unknown error";
}

/// <summary>Owns one ZSTD_DStream.</summary>
internal sealed class ZstdDStreamHandle : SafeHandleZeroOrMinusOneIsInvalid
{
    public ZstdDStreamHandle() : base(ownsHandle: true) { }

    protected override bool ReleaseHandle()
    {
        ZstdNative.ZSTD_freeDStream(handle);
        return true;
    }
}

/// <summary>
/// A read-only stream of the decompressed bytes of a zstd stream (any number of frames), decoded by libzstd straight
/// into the caller's buffer. Corrupt data throws <see cref="IOException"/> with zstd's reason; input that ends inside
/// a frame throws <see cref="EndOfStreamException"/> ("Premature end of stream", as ZstdSharp says).
/// </summary>
internal sealed unsafe class NativeZstdStream : ReadOnlyStream
{
    private readonly Stream _inner;
    private readonly ZstdDStreamHandle _ds;
    private readonly byte[] _input;
    private int _inputPos, _inputLength;
    private bool _innerEnded;
    private bool _inFrame; // the last ZSTD_decompressStream that made progress returned > 0: a frame is not complete

    /// <summary>Decompresses <paramref name="inner"/> (owned: disposed with this stream). Needs <see cref="ZstdNative.IsAvailable"/>.</summary>
    public NativeZstdStream(Stream inner)
    {
        _inner = inner;
        _ds = ZstdNative.ZSTD_createDStream();
        if (_ds.IsInvalid)
            throw new OutOfMemoryException("ZSTD_createDStream failed");
        nuint r = ZstdNative.ZSTD_initDStream(_ds);
        if (ZstdNative.ZSTD_isError(r) != 0)
            throw new IOException("ZSTD_initDStream: " + ZstdNative.ErrorName(r));
        // ZSTD_DStreamInSize is one compressed block plus its header (~128 KiB): a read never splits less than a block.
        _input = new byte[(int)ZstdNative.ZSTD_DStreamInSize()];
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        ObjectDisposedException.ThrowIf(_ds.IsClosed, this);
        if (buffer.IsEmpty)
            return 0;
        fixed (byte* dst = buffer)
        fixed (byte* src = _input)
        {
            var output = new ZstdNative.OutBuffer { Dst = dst, Size = (nuint)buffer.Length };
            while (true)
            {
                if (_inputPos == _inputLength && !_innerEnded)
                {
                    _inputLength = _inner.Read(_input, 0, _input.Length);
                    _inputPos = 0;
                    _innerEnded = _inputLength == 0;
                }
                var input = new ZstdNative.InBuffer { Src = src, Size = (nuint)_inputLength, Pos = (nuint)_inputPos };
                nuint r = ZstdNative.ZSTD_decompressStream(_ds, &output, &input);
                if (ZstdNative.ZSTD_isError(r) != 0)
                    throw new IOException(ZstdNative.ErrorName(r));
                // A call that moved nothing says nothing about the frame: between frames libzstd answers an empty
                // input with the size of the next header (> 0), which is not "inside a frame".
                if ((int)input.Pos != _inputPos || output.Pos > 0)
                    _inFrame = r != 0;
                _inputPos = (int)input.Pos;
                if (output.Pos > 0)
                    return (int)output.Pos;
                // No output with room for it: libzstd needs more input. At the end of the input that is a cut frame.
                if (_innerEnded && _inputPos == _inputLength)
                {
                    if (_inFrame)
                        throw new EndOfStreamException("Premature end of stream (the input ends inside a zstd frame)");
                    return 0;
                }
            }
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _ds.Dispose();
            _inner.Dispose();
        }
        base.Dispose(disposing);
    }
}
