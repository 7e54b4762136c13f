namespace Kmem.Tracing;

/// <summary>How a trace file is compressed.</summary>
public enum TraceCompression
{
    /// <summary>Decide from the magic bytes, checked against the file extension.</summary>
    Auto,
    /// <summary>Plain text.</summary>
    None,
    /// <summary>gzip (<c>.gz</c>, magic 1F 8B).</summary>
    Gzip,
    /// <summary>Zstandard (<c>.zst</c>, magic 28 B5 2F FD).</summary>
    Zstd,
}

/// <summary>Options of <see cref="FtraceReader"/>.</summary>
public sealed record FtraceReaderOptions
{
    /// <summary>Strict (default): a malformed line throws <see cref="TraceFormatException"/>. Lenient: it is counted and skipped.</summary>
    public bool Strict { get; init; } = true;

    /// <summary>
    /// Size of the line buffer, which is also the longest line accepted (longer ones are malformed).
    /// 1 MiB: ~6,500 lines of ~160 bytes per refill, so the per-read overhead of the decompressor vanishes.
    /// </summary>
    public int BufferSize { get; init; } = 1 << 20;

    /// <summary>
    /// Decompress on a background thread, one chunk ahead of parsing (compressed input, more than one core).
    /// Default true: on two cores it hides most of the decompression time.
    /// </summary>
    public bool ReadAhead { get; init; } = true;

    /// <summary>
    /// The zstd decompressor. Default <see cref="ZstdDecoder.Auto"/>: the system's libzstd.so.1 when it loads (up to
    /// ~2x faster than managed on the real traces), else ZstdSharp. Both give the same bytes and the same errors.
    /// </summary>
    public ZstdDecoder Zstd { get; init; } = ZstdDecoder.Auto;

    /// <summary>
    /// Whether a line that starts with the previous line's header (<c>comm-pid [cpu] flags </c>) reuses what that
    /// header decoded to. Always on outside tests, which turn it off to compare against the general path.
    /// </summary>
    internal bool HeaderCache { get; init; } = true;

    /// <summary>
    /// Whether slab and page events are first read by straight-line code for Linux 6.18's exact field layout. Always
    /// on outside tests, which turn it off to compare against the general path.
    /// </summary>
    internal bool FieldFastPath { get; init; } = true;

    /// <summary>How many malformed lines to keep as samples in lenient mode.</summary>
    public int MaxMalformedSamples { get; init; } = 8;

    /// <summary>Strict options.</summary>
    public static FtraceReaderOptions StrictMode { get; } = new();

    /// <summary>Lenient options: malformed lines are counted and skipped.</summary>
    public static FtraceReaderOptions Lenient { get; } = new() { Strict = false };
}

/// <summary>A malformed line kept as a sample by a lenient <see cref="FtraceReader"/>.</summary>
/// <param name="File">Trace name.</param>
/// <param name="Line">1-based line number.</param>
/// <param name="Reason">What was wrong.</param>
/// <param name="Text">The line, non-printable bytes replaced, cut to 200 characters.</param>
public sealed record MalformedLine(string File, long Line, string Reason, string Text)
{
    /// <inheritdoc/>
    public override string ToString() => $"{File}:{Line}: {Reason}: \"{Text}\"";
}
