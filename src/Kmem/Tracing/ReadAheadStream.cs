using System.Collections.Concurrent;

namespace Kmem.Tracing;

/// <summary>
/// A read-only stream that runs its inner stream (a decompressor) on a background thread, one chunk ahead of
/// the reader, so decompression and parsing overlap on two cores. Memory is bounded: <c>ChunkCount</c> chunks of
/// <c>ChunkSize</c> bytes circulate between a free queue and a full queue and are never reallocated. An
/// exception of the inner stream is rethrown by <see cref="Read(byte[], int, int)"/>.
/// </summary>
internal sealed class ReadAheadStream : Stream
{
    // 4 x 1 MiB: two being filled/queued while one is consumed; enough to ride out scheduling jitter.
    private const int ChunkCount = 4;
    private const int ChunkSize = 1 << 20;

    private readonly Stream _inner;
    private readonly BlockingCollection<byte[]> _free = new(ChunkCount);
    private readonly BlockingCollection<(byte[] Buffer, int Length)> _full = new(ChunkCount);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _producer;
    private Exception? _error;
    private byte[]? _current;
    private int _currentLength;
    private int _currentPos;
    private bool _done;

    public ReadAheadStream(Stream inner)
    {
        _inner = inner;
        for (int i = 0; i < ChunkCount; i++)
            _free.Add(new byte[ChunkSize]);
        _producer = new Thread(Produce) { IsBackground = true, Name = "kmem trace read-ahead" };
        _producer.Start();
    }

    private void Produce()
    {
        try
        {
            while (true)
            {
                byte[] chunk = _free.Take(_stop.Token);
                int n = 0;
                try
                {
                    int got;
                    while (n < chunk.Length && (got = _inner.Read(chunk, n, chunk.Length - n)) > 0)
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
                if (n < chunk.Length || _error is not null)
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
            if (_current is not null && _currentPos < _currentLength)
            {
                int n = Math.Min(buffer.Length, _currentLength - _currentPos);
                _current.AsSpan(_currentPos, n).CopyTo(buffer);
                _currentPos += n;
                return n;
            }
            if (_current is not null)
            {
                _free.Add(_current);
                _current = null;
            }
            if (_done || !_full.TryTake(out var next, Timeout.Infinite))
            {
                _done = true;
                if (_error is not null)
                    throw new IOException("Reading the trace failed: " + _error.Message, _error);
                return 0;
            }
            (_current, _currentLength) = next;
            _currentPos = 0;
        }
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _stop.Cancel();
            _producer.Join();
            _inner.Dispose();
            _stop.Dispose();
            _free.Dispose();
            _full.Dispose();
        }
        base.Dispose(disposing);
    }

    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
}
