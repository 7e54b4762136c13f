using System.IO.Compression;
using System.Text;

namespace Kmem.Tracing.Emit;

/// <summary>
/// One capture of kmem's own tracepoints, for <c>kmem run --trace-out FILE</c> and tests: <see cref="Start"/> gives the
/// global tracepoints a per-CPU ring buffer sized for the machine and enables every event (as
/// <c>echo 1 &gt; events/enable</c>); <see cref="Stop"/> (or Dispose) disables them; <see cref="WriteTo(string)"/> prints
/// the records in ftrace's text format, plain or compressed by the file's extension (.zst, .gz), for
/// <c>kmem replay</c> and <c>kmem trace stat</c>. Tracepoints are process-global, like ftrace's: one session at a time.
/// </summary>
public sealed class TraceSession : IDisposable
{
    private readonly TraceRingBuffer _buffer;
    private bool _stopped;

    private TraceSession(TraceRingBuffer buffer) => _buffer = buffer;

    /// <summary>
    /// Starts tracing every event of every machine in the process into a buffer of <paramref name="bufferRecords"/>
    /// records per CPU of <paramref name="machine"/> (80 bytes each; ftrace's buffer_size_kb). Overwrite mode, as
    /// ftrace's default: the oldest events are lost first, and counted.
    /// </summary>
    /// <exception cref="InvalidOperationException">Another session is running.</exception>
    public static TraceSession Start(Machine machine, int bufferRecords = 1 << 20, RingMode mode = RingMode.Overwrite)
    {
        ArgumentNullException.ThrowIfNull(machine);
        ArgumentOutOfRangeException.ThrowIfLessThan(bufferRecords, 1);
        if (Tracepoints.Buffer != null) throw new InvalidOperationException("a trace session is already running");
        var buffer = new TraceRingBuffer(Math.Max(1, machine.CpuCount), bufferRecords, mode);
        Tracepoints.Start(buffer);
        Tracepoints.EnableAll();
        return new TraceSession(buffer);
    }

    /// <summary>Records kept in the buffer now.</summary>
    public long Records
    {
        get
        {
            long n = 0;
            for (int c = 0; c < _buffer.Cpus; c++) n += Math.Min(_buffer.Written(c), _buffer.Capacity);
            return n;
        }
    }

    /// <summary>Events lost (overwritten or refused) so far.</summary>
    public long Lost => _buffer.TotalLost;

    /// <summary>Disables every event and detaches the buffer (idempotent). The records stay for <see cref="WriteTo(string)"/>.</summary>
    public void Stop()
    {
        if (_stopped) return;
        _stopped = true;
        if (ReferenceEquals(Tracepoints.Buffer, _buffer)) Tracepoints.Stop();
    }

    /// <summary>Stops tracing and writes the trace to <paramref name="path"/>: zstd for .zst/.zstd, gzip for .gz, else plain text. Returns the lines written.</summary>
    public long WriteTo(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        Stop();
        using var file = File.Create(path);
        string ext = Path.GetExtension(path);
        Stream s = ext.Equals(".zst", StringComparison.OrdinalIgnoreCase) || ext.Equals(".zstd", StringComparison.OrdinalIgnoreCase)
            ? new ZstdSharp.CompressionStream(file, 3)
            : ext.Equals(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionLevel.Fastest) : file;
        try
        {
            using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true) { NewLine = "\n" };
            return WriteTo(w);
        }
        finally
        {
            if (!ReferenceEquals(s, file)) s.Dispose();
        }
    }

    /// <summary>Stops tracing and writes the trace to <paramref name="writer"/>. Returns the lines written.</summary>
    public long WriteTo(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        Stop();
        return FtraceWriter.Write(writer, _buffer);
    }

    /// <summary>Stops tracing and frees the buffer.</summary>
    public void Dispose()
    {
        Stop();
        _buffer.Dispose();
    }
}
