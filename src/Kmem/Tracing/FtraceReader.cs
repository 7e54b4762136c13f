using System.IO.Compression;
using System.Text;

namespace Kmem.Tracing;

/*
 * FtraceReader: streaming reader of kmem ftrace text (trace_pipe output), plain, gzip or zstd.
 *
 * 1. Why byte spans. A replay must sustain >= 2 million events/s on two cores, decompression included, and a
 *    trace line is ~160 bytes of ASCII. Decoding to UTF-16 strings per line would double the bytes touched and
 *    allocate per line. Instead the reader keeps one large byte buffer, finds lines with a vectorized
 *    IndexOf('\n'), and FtraceLineParser reads fields straight out of the span: numbers by hand, texts (comm,
 *    call site, cache name, GFP text) interned through TraceStringTable's span lookup, so a steady-state line
 *    allocates nothing. With read-ahead the lines are read straight out of the decompressor's chunks, which
 *    ReadAheadStream lends, the partial line at a chunk's end carried into the next chunk's headroom; the reader's
 *    own buffer then serves only the rare cases that do not fit (see TryReadLine).
 *
 * 2. Bounded memory. The reader holds: the buffer (FtraceReaderOptions.BufferSize, 1 MiB), the decompressor's
 *    window (zstd: up to 8 MiB at the levels trace files use; gzip 32 KiB), the read-ahead chunks, the string table (grows with
 *    distinct texts, which a kernel bounds by its symbols, caches and comms; not with trace length), and up to
 *    MaxMalformedSamples sample lines. Nothing else grows with the trace. A line longer than the buffer (binary
 *    junk without newlines) is reported malformed once and its remainder is discarded up to the next newline.
 *
 * 3. Malformed lines. Strict mode (default) throws TraceFormatException naming file:line and the reason on the
 *    first bad line. Lenient mode counts it (Malformed), keeps the first few as MalformedSamples, and goes on
 *    with the next line; the parser is total over arbitrary bytes, so junk cannot crash it. Lines that are
 *    valid ftrace but of other events are counted as Skipped, '#' and blank lines as Comments, and
 *    trace_pipe's "CPU:N [LOST M EVENTS]" notices add M to LostEvents; none of these are errors.
 *
 * 4. Compression. Chosen by magic bytes (zstd 28 B5 2F FD, gzip 1F 8B) and the extension (.zst, .gz) together:
 *    the magic decides, and a compressed extension on data without that magic is a TraceFormatException (a
 *    truncated or mislabelled file), so a corrupt archive is never read as text. zstd is decoded by the system's
 *    libzstd.so.1 when it loads (NativeZstdStream), else by managed ZstdSharp (FtraceReaderOptions.Zstd); the two
 *    give the same bytes. A corrupt or truncated file surfaces from TryRead as IOException (zstd's reason, or
 *    "Premature end of stream"), after the events decoded before the damage. With more than one core the
 *    decompressor runs one chunk ahead on a background thread (ReadAheadStream, 4 chunks of 4 MiB, the first
 *    filled to 256 KiB), so decompression and parsing overlap.
 */

/// <summary>
/// Streams the kmem events of an ftrace text trace: <c>while (reader.TryRead(out var ev)) ...</c>.
/// Texts in events are ids into <see cref="Strings"/>. Not thread-safe.
/// </summary>
public sealed class FtraceReader : IDisposable
{
    private static ReadOnlySpan<byte> ZstdMagic => [0x28, 0xB5, 0x2F, 0xFD];
    private static ReadOnlySpan<byte> GzipMagic => [0x1F, 0x8B];

    private readonly Stream _stream;
    private readonly ReadAheadStream? _readAhead; // _stream, when decompressing on a background thread
    private readonly FtraceLineParser _parser;
    private readonly byte[] _own;  // the reader's buffer (BufferSize bytes, also the longest line accepted)
    private byte[] _buffer;        // the window's array: _own, or a chunk lent by _readAhead
    private readonly List<MalformedLine> _samples = [];
    private readonly int _maxSamples;
    private int _start;      // first unread byte in _buffer
    private int _end;        // end of valid data in _buffer
    private bool _eof;
    private bool _discarding; // inside an over-long line: drop bytes up to the next newline

    /// <summary>Opens <paramref name="path"/>, detecting its compression.</summary>
    public FtraceReader(string path, FtraceReaderOptions? options = null)
        : this(File.OpenRead(path), Path.GetFileName(path), TraceCompression.Auto, options, Path.GetExtension(path))
    {
    }

    /// <summary>Reads a trace from <paramref name="stream"/> (owned and disposed by the reader).</summary>
    /// <param name="stream">The raw (possibly compressed) bytes. <see cref="TraceCompression.Auto"/> needs a seekable stream.</param>
    /// <param name="name">Name used in error messages (usually the file name).</param>
    /// <param name="compression">The compression, or Auto to detect it from the magic bytes and <paramref name="name"/>'s extension.</param>
    /// <param name="options">Strictness and buffer size.</param>
    public FtraceReader(Stream stream, string name, TraceCompression compression = TraceCompression.Auto,
        FtraceReaderOptions? options = null)
        : this(stream, name, compression, options, Path.GetExtension(name))
    {
    }

    private FtraceReader(Stream stream, string name, TraceCompression compression, FtraceReaderOptions? options,
        string extension)
    {
        options ??= FtraceReaderOptions.StrictMode;
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BufferSize, 256, nameof(options));
        Name = name;
        Strict = options.Strict;
        _maxSamples = options.MaxMalformedSamples;
        try
        {
            if (compression == TraceCompression.Auto)
                compression = Detect(stream, name, extension);
            ZstdDecoder zstd = compression == TraceCompression.Zstd ? ChooseZstd(options.Zstd, ZstdNative.IsAvailable) : ZstdDecoder.Auto;
            _stream = compression switch
            {
                TraceCompression.Gzip => new GZipStream(stream, CompressionMode.Decompress),
                TraceCompression.Zstd when zstd == ZstdDecoder.Native => new NativeZstdStream(stream),
                TraceCompression.Zstd => new ZstdSharp.DecompressionStream(stream, 1 << 17),
                _ => stream,
            };
            Decompressor = compression switch
            {
                TraceCompression.Gzip => "gzip (System.IO.Compression)",
                TraceCompression.Zstd when zstd == ZstdDecoder.Native => ZstdNative.Description,
                TraceCompression.Zstd => "ZstdSharp (managed)",
                _ => "none",
            };
            if (compression != TraceCompression.None && options.ReadAhead && Environment.ProcessorCount > 1)
                _stream = _readAhead = new ReadAheadStream(_stream);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
        Compression = compression;
        _buffer = _own = new byte[options.BufferSize];
        _parser = new FtraceLineParser(Strings) { RememberHeaders = options.HeaderCache, FieldFastPath = options.FieldFastPath };
    }

    /// <summary>Trace name used in messages.</summary>
    public string Name { get; }

    /// <summary>True if malformed lines throw.</summary>
    public bool Strict { get; }

    /// <summary>The compression actually used.</summary>
    public TraceCompression Compression { get; }

    /// <summary>What decompresses the trace: "libzstd 1.5.4", "ZstdSharp (managed)", "gzip (System.IO.Compression)" or "none".</summary>
    public string Decompressor { get; } = "none";

    /// <summary>
    /// The zstd decoder for <paramref name="requested"/> when libzstd is (<paramref name="nativeAvailable"/>) or is
    /// not loadable: Auto falls back to Managed; Native without the library throws.
    /// </summary>
    /// <exception cref="DllNotFoundException">Native requested and libzstd.so.1 not loadable.</exception>
    internal static ZstdDecoder ChooseZstd(ZstdDecoder requested, bool nativeAvailable) => requested switch
    {
        ZstdDecoder.Managed => ZstdDecoder.Managed,
        _ when nativeAvailable => ZstdDecoder.Native,
        ZstdDecoder.Native => throw new DllNotFoundException($"ZstdDecoder.Native: {ZstdNative.Description}"),
        _ => ZstdDecoder.Managed,
    };

    /// <summary>The texts the events' ids refer to.</summary>
    public TraceStringTable Strings { get; } = new();

    /// <summary>Lines read so far (all kinds).</summary>
    public long Lines { get; private set; }

    /// <summary>kmem events returned so far.</summary>
    public long Events { get; private set; }

    /// <summary>Well-formed lines of events kmem does not read.</summary>
    public long Skipped { get; private set; }

    /// <summary>Comment (<c>#</c>) and blank lines.</summary>
    public long Comments { get; private set; }

    /// <summary>Malformed lines skipped (lenient mode).</summary>
    public long Malformed { get; private set; }

    /// <summary>Events the kernel reported lost (<c>CPU:N [LOST M EVENTS]</c>), summed.</summary>
    public long LostEvents { get; private set; }

    /// <summary>The first few malformed lines (lenient mode).</summary>
    public IReadOnlyList<MalformedLine> MalformedSamples => _samples;

    /// <summary>Reads the next kmem event. False at the end of the trace.</summary>
    /// <exception cref="TraceFormatException">Strict mode and a malformed line.</exception>
    public bool TryRead(out TraceEvent ev)
    {
        while (TryReadLine(out ReadOnlySpan<byte> line, out bool tooLong))
        {
            long lineNo = ++Lines;
            if (tooLong)
            {
                OnMalformed(line, $"line longer than {_own.Length} bytes");
                continue;
            }
            switch (_parser.Parse(line, out ev))
            {
                case LineKind.Event:
                    ev.Line = lineNo;
                    Events++;
                    return true;
                case LineKind.Comment:
                    Comments++;
                    break;
                case LineKind.Unrelated:
                    Skipped++;
                    break;
                case LineKind.Lost:
                    LostEvents += _parser.LostCount;
                    break;
                default:
                    OnMalformed(line, _parser.Error);
                    break;
            }
        }
        ev = default;
        return false;
    }

    /// <summary>Reads every remaining event, passing each to <paramref name="onEvent"/>. Returns the count.</summary>
    public long ReadAll(Action<TraceEvent> onEvent)
    {
        ArgumentNullException.ThrowIfNull(onEvent);
        long n = 0;
        while (TryRead(out TraceEvent ev))
        {
            onEvent(ev);
            n++;
        }
        return n;
    }

    /// <summary>Closes the underlying stream.</summary>
    public void Dispose() => _stream.Dispose();

    // Next line without its '\n'. A line that does not fit the buffer comes back as its first buffer-full with
    // tooLong set; its remainder is then discarded. With read-ahead, lines are read straight out of the chunks the
    // read-ahead stream lends (the partial line at a chunk's end carried in front of the next one), and the reader's
    // own buffer is used only when that does not work out (a partial line longer than the chunks' headroom).
    private bool TryReadLine(out ReadOnlySpan<byte> line, out bool tooLong)
    {
        tooLong = false;
        int max = _own.Length; // a line needs its newline in the buffer too: lines of max bytes or more are too long
        while (true)
        {
            ReadOnlySpan<byte> avail = _buffer.AsSpan(_start, _end - _start);
            int nl = avail.IndexOf((byte)'\n');
            if (nl >= 0)
            {
                _start += nl + 1;
                if (_discarding)
                {
                    _discarding = false;
                    continue;
                }
                if (nl >= max) // only in a lent chunk, which holds more than the buffer would
                {
                    line = avail[..max];
                    tooLong = true;
                    return true;
                }
                line = avail[..nl];
                return true;
            }
            if (_eof)
            {
                _start = _end;
                if (avail.IsEmpty || _discarding)
                {
                    _discarding = false;
                    line = default;
                    return false;
                }
                if (avail.Length >= max) // ditto
                {
                    line = avail[..max];
                    tooLong = true;
                    return true;
                }
                line = avail; // last line without a newline
                return true;
            }
            if (_discarding)
            {
                _buffer = _own;
                _start = _end = 0;
            }
            else
            {
                if (_readAhead is not null)
                {
                    switch (_readAhead.Lend(avail, out byte[]? chunk, out int start, out int end))
                    {
                        case ReadAheadStream.LendResult.Lent:
                            _buffer = chunk!;
                            _start = start;
                            _end = end;
                            continue;
                        case ReadAheadStream.LendResult.End:
                            _eof = true;
                            continue;
                    }
                }
                if (_buffer != _own)
                {
                    // Back to the reader's buffer (and Read) with what is left of a lent chunk.
                    if (avail.Length >= max)
                    {
                        _discarding = true;
                        _start = _end;
                        line = avail[..max];
                        tooLong = true;
                        return true;
                    }
                    avail.CopyTo(_own);
                    _buffer = _own;
                    _start = 0;
                    _end = avail.Length;
                }
                else if (_start > 0)
                {
                    avail.CopyTo(_own);
                    _end = avail.Length;
                    _start = 0;
                }
                else if (_end == max)
                {
                    // No newline in a full buffer: report the line once, drop the rest of it.
                    _discarding = true;
                    _start = _end;
                    line = _own;
                    tooLong = true;
                    return true;
                }
            }
            int n = Fill(_end, max - _end);
            if (n == 0)
                _eof = true;
            else
                _end += n;
        }
    }

    // ZstdSharp reports corrupt data with its own ZstdException (not an IOException); make it the IOException the
    // native decoder and the read-ahead thread throw, so callers handle one exception type for a bad file.
    private int Fill(int offset, int count)
    {
        try
        {
            return _stream.Read(_own, offset, count);
        }
        catch (ZstdSharp.ZstdException e)
        {
            throw new IOException(e.Message, e);
        }
    }

    private void OnMalformed(ReadOnlySpan<byte> line, string reason)
    {
        if (Strict)
            throw new TraceFormatException(Name, Lines, reason, Printable(line));
        Malformed++;
        if (_samples.Count < _maxSamples)
            _samples.Add(new MalformedLine(Name, Lines, reason, Printable(line)));
    }

    /// <summary>The line as text for messages: at most 200 characters, bytes outside printable ASCII as '?'.</summary>
    internal static string Printable(ReadOnlySpan<byte> line)
    {
        const int Max = 200;
        var sb = new StringBuilder(Math.Min(line.Length, Max) + 3);
        foreach (byte b in line.Length > Max ? line[..Max] : line)
            sb.Append(b is >= 0x20 and < 0x7F ? (char)b : '?');
        if (line.Length > Max)
            sb.Append("...");
        return sb.ToString();
    }

    private static TraceCompression Detect(Stream stream, string name, string extension)
    {
        if (!stream.CanSeek)
            throw new ArgumentException("Compression detection needs a seekable stream; pass the compression.", nameof(stream));
        Span<byte> magic = stackalloc byte[4];
        long origin = stream.Position;
        int got = stream.ReadAtLeast(magic, magic.Length, throwOnEndOfStream: false);
        stream.Position = origin;
        return DetectCompression(magic[..got], extension, name);
    }

    /// <summary>
    /// The compression of data starting with <paramref name="magic"/> in a file with <paramref name="extension"/>:
    /// the magic decides; a <c>.zst</c>/<c>.gz</c> extension without its magic throws.
    /// </summary>
    /// <exception cref="TraceFormatException">The extension promises a compression the bytes do not have.</exception>
    public static TraceCompression DetectCompression(ReadOnlySpan<byte> magic, string extension, string name = "")
    {
        if (magic.StartsWith(ZstdMagic))
            return TraceCompression.Zstd;
        if (magic.StartsWith(GzipMagic))
            return TraceCompression.Gzip;
        if (extension.Equals(".zst", StringComparison.OrdinalIgnoreCase) || extension.Equals(".zstd", StringComparison.OrdinalIgnoreCase))
            throw new TraceFormatException(name, 0, "file is named .zst but is not zstd data (no 28 B5 2F FD magic)");
        if (extension.Equals(".gz", StringComparison.OrdinalIgnoreCase))
            throw new TraceFormatException(name, 0, "file is named .gz but is not gzip data (no 1F 8B magic)");
        return TraceCompression.None;
    }
}
