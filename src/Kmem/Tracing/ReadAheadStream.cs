using System.Collections.Concurrent;

namespace Kmem.Tracing;

/// <summary>
/// A read-only stream that runs its inner stream (a decompressor) on a background thread, one chunk ahead of
/// the reader, so decompression and parsing overlap on two cores. Memory is bounded: <c>ChunkCount</c> chunks of
/// <c>ChunkSize</c> bytes (the first one filled only to <c>FirstChunkSize</c>) circulate between a free queue and a
/// full queue and are never reallocated (at the end they go to <see cref="LargeBufferCache{T}"/> for the next
/// reader). An exception of the inner stream is rethrown by <see cref="Read(byte[], int, int)"/> and <see cref="Lend"/>.
/// </summary>
/// <remarks>
/// Besides <see cref="Stream.Read(Span{byte})"/>, which copies, a chunk can be lent to the reader (<see cref="Lend"/>):
/// the reader parses lines straight out of it, and the partial line it ended the previous window with is copied into
/// the <c>Headroom</c> in front of the chunk's data. The parse thread is the replay's bottleneck, and the copy of
/// every decompressed byte into the reader's own buffer was ~6% of it.
/// </remarks>
internal sealed class ReadAheadStream : ReadOnlyStream
{
    // 4 chunks: two being filled/queued while one is consumed; enough to ride out scheduling jitter. 4 MiB each: a
    // handoff to a thread that went to sleep costs a wake-up (~0.1-0.2 ms on a virtual machine), and 1 MiB chunks
    // measured 7-12% slower replays; the first chunk is small so that parsing starts early.
    private const int ChunkCount = 4;
    internal const int ChunkSize = 4 << 20;
    internal const int FirstChunkSize = 256 << 10;

    /// <summary>Offset in the decompressed data where chunk <paramref name="k"/> (0-based) starts.</summary>
    internal static long ChunkStart(int k) => k == 0 ? 0 : FirstChunkSize + (long)(k - 1) * ChunkSize;

    /// <summary>
    /// Bytes in front of each chunk's data for the carried partial line. Trace lines are ~160-200 bytes; a partial
    /// line longer than this is carried the slow way (copied into the reader's buffer).
    /// </summary>
    internal const int Headroom = 4096;

    private readonly Stream _inner;
    private readonly BlockingCollection<byte[]> _free = new(ChunkCount);
    private readonly BlockingCollection<(byte[] Buffer, int Length)> _full = new(ChunkCount);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _producer;
    private Exception? _error;
    private byte[]? _current;   // the chunk being read, or the one lent last
    private int _currentPos;    // next unread byte of _current (Read's position); lent chunks are read to the end
    private int _currentEnd;    // end of _current's data
    private bool _done;

    public ReadAheadStream(Stream inner)
    {
        _inner = inner;
        for (int i = 0; i < ChunkCount; i++)
            _free.Add(LargeBufferCache<byte>.Rent(Headroom + ChunkSize)); // uninitialized: only written bytes are read
        _producer = new Thread(Produce) { IsBackground = true, Name = "kmem trace read-ahead" };
        _producer.Start();
    }

    private void Produce()
    {
        try
        {
            for (int want = FirstChunkSize; ; want = ChunkSize)
            {
                byte[] chunk = _free.Take(_stop.Token);
                int n = 0;
                try
                {
                    int got;
                    while (n < want && (got = _inner.Read(chunk, Headroom + n, want - n)) > 0)
                        n += got;
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    // The bytes decoded before a corrupt or truncated spot still reach the reader, as they do without
                    // read-ahead, so a strict reader's error comes after every event before the damage.
                    _error = ex;
                }
                if (n > 0)
                    _full.Add((chunk, n), _stop.Token);
                if (n < want || _error is not null)
                    break;
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            _error = ex;
        }
        finally
        {
            _full.CompleteAdding();
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

    public override int Read(Span<byte> buffer)
    {
        while (true)
        {
            if (_current is not null && _currentPos < _currentEnd)
            {
                int n = Math.Min(buffer.Length, _currentEnd - _currentPos);
                _current.AsSpan(_currentPos, n).CopyTo(buffer);
                _currentPos += n;
                return n;
            }
            if (!TakeNext())
                return 0;
        }
    }

    /// <summary>What <see cref="Lend"/> did.</summary>
    internal enum LendResult
    {
        /// <summary>A chunk was lent: the window is its data with the carried bytes in front.</summary>
        Lent,
        /// <summary>No more data: the carried bytes are the end of the trace.</summary>
        End,
        /// <summary>Nothing taken: the current chunk is partly read, or the carried bytes do not fit the headroom. Use Read.</summary>
        UseRead,
    }

    /// <summary>
    /// Lends the next chunk: <paramref name="chunk"/>[<paramref name="start"/>..<paramref name="end"/>) is
    /// <paramref name="carry"/> followed by the chunk's data. The chunk stays the caller's until its next
    /// <see cref="Lend"/> or Read, which recycle it (so <paramref name="carry"/> may lie inside the chunk lent before).
    /// </summary>
    internal LendResult Lend(ReadOnlySpan<byte> carry, out byte[]? chunk, out int start, out int end)
    {
        chunk = null;
        start = end = 0;
        if (carry.Length > Headroom || (_current is not null && _currentPos < _currentEnd))
            return LendResult.UseRead;
        byte[]? previous = _current;
        if (!Take(out byte[]? next, out int length))
            return LendResult.End;
        carry.CopyTo(next.AsSpan(Headroom - carry.Length));
        if (previous is not null)
            _free.Add(previous); // only now: carry may have been inside it
        _current = next;
        _currentPos = _currentEnd = Headroom + length; // all of it is the caller's
        chunk = next;
        start = Headroom - carry.Length;
        end = Headroom + length;
        return LendResult.Lent;
    }

    // Recycles the current chunk and makes the next one current; false at the end of the data.
    private bool TakeNext()
    {
        if (_current is not null)
        {
            _free.Add(_current);
            _current = null;
        }
        if (!Take(out byte[]? next, out int length))
            return false;
        _current = next;
        _currentPos = Headroom;
        _currentEnd = Headroom + length;
        return true;
    }

    // The next full chunk; false at the end of the data, after rethrowing the producer's error if it had one.
    private bool Take([System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out byte[]? chunk, out int length)
    {
        if (_done || !_full.TryTake(out var next, Timeout.Infinite))
        {
            _done = true;
            if (_error is not null)
                throw new IOException("Reading the trace failed: " + _error.Message, _error);
            chunk = null;
            length = 0;
            return false;
        }
        (chunk, length) = next;
        return true;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _stop.Cancel();
            _producer.Join();
            _inner.Dispose();
            _stop.Dispose();
            // Every chunk is in one of the queues or current; none is used after this (the reader is disposed too).
            while (_free.TryTake(out byte[]? chunk)) LargeBufferCache<byte>.Return(chunk);
            while (_full.TryTake(out var item)) LargeBufferCache<byte>.Return(item.Buffer);
            LargeBufferCache<byte>.Return(_current);
            _current = null;
            _free.Dispose();
            _full.Dispose();
        }
        base.Dispose(disposing);
    }
}
