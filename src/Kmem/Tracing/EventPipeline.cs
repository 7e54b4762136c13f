using System.Collections.Concurrent;

namespace Kmem.Tracing;

/// <summary>
/// Runs a <see cref="FtraceReader"/> on a background thread, handing its events to the consumer in batches, so that
/// reading (decompression and parsing) and replaying overlap on two cores. Memory is bounded: <c>BatchCount</c> arrays
/// of <c>BatchSize</c> events circulate between a free and a full queue and are never reallocated. An exception of the
/// reader (a malformed line in strict mode) is rethrown by <see cref="TryNext"/> after the events before it.
/// The reader's <see cref="TraceStringTable"/> is written by the background thread: the consumer may read texts by id
/// (the table's indexer is locked against its additions) but must not use the reader itself until the pipeline ends.
/// </summary>
internal sealed class EventPipeline : IDisposable
{
    // 4 batches: one being filled, one being replayed, two queued to ride out scheduling jitter. A handoff to a
    // thread that went to sleep costs a wake-up, which on a virtual machine (an IPI to an idle vCPU) comes out at
    // ~0.1-0.2 ms from how much smaller batches lost: 4096-event ones ~7% of replay speed against 16384, 512-event
    // ones ~35% against 4096.
    // The first batch is small so that replay starts as soon as possible.
    private const int BatchCount = 4;
    private const int BatchSize = 16384;
    private const int FirstBatchSize = 1024;

    private readonly FtraceReader _reader;
    private readonly long _limit;
    private readonly BlockingCollection<TraceEvent[]> _free = new(BatchCount);
    private readonly BlockingCollection<(TraceEvent[] Batch, int Count)> _full = new(BatchCount);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _producer;
    private Exception? _error;
    private TraceEvent[]? _current;

    /// <summary>
    /// Allocates a pipeline's batches now, into <see cref="LargeBufferCache{T}"/>, so that the next pipeline finds them
    /// (the replay engine does this when it is built, before its clock starts: ~14 MB of new arrays took 1-8 ms).
    /// </summary>
    public static void Reserve()
    {
        var batches = new TraceEvent[BatchCount][];
        for (int i = 0; i < BatchCount; i++)
            batches[i] = LargeBufferCache<TraceEvent>.Rent(BatchSize);
        foreach (TraceEvent[] b in batches)
            LargeBufferCache<TraceEvent>.Return(b);
    }

    /// <summary>Starts reading <paramref name="reader"/>, at most <paramref name="limit"/> events.</summary>
    public EventPipeline(FtraceReader reader, long limit)
    {
        _reader = reader;
        _limit = limit;
        for (int i = 0; i < BatchCount; i++)
            _free.Add(LargeBufferCache<TraceEvent>.Rent(BatchSize)); // 3.5 MB each, uninitialized: every event is written before it is read
        _producer = new Thread(Produce) { IsBackground = true, Name = "kmem trace parse-ahead" };
        _producer.Start();
    }

    private void Produce()
    {
        long total = 0;
        try
        {
            while (total < _limit)
            {
                TraceEvent[] batch = _free.Take(_stop.Token);
                int n = 0;
                int want = (int)Math.Min(total == 0 ? FirstBatchSize : BatchSize, _limit - total);
                while (n < want && _reader.TryRead(out batch[n])) n++;
                total += n;
                if (n == 0) break;
                _full.Add((batch, n), _stop.Token);
                if (n < want) break;
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            _error = e;
        }
        finally
        {
            _full.CompleteAdding();
        }
    }

    /// <summary>The next batch of events (the previous one is recycled). False at the end.</summary>
    public bool TryNext(out ReadOnlySpan<TraceEvent> events)
    {
        if (_current != null)
        {
            _free.Add(_current);
            _current = null;
        }
        if (_full.TryTake(out var item, Timeout.Infinite))
        {
            _current = item.Batch;
            events = item.Batch.AsSpan(0, item.Count);
            return true;
        }
        events = default;
        if (_error != null)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(_error);
        return false;
    }

    /// <summary>Stops the background thread and waits for it.</summary>
    public void Dispose()
    {
        _stop.Cancel();
        _producer.Join();
        _stop.Dispose();
        while (_free.TryTake(out TraceEvent[]? batch)) LargeBufferCache<TraceEvent>.Return(batch);
        while (_full.TryTake(out var item)) LargeBufferCache<TraceEvent>.Return(item.Batch);
        LargeBufferCache<TraceEvent>.Return(_current);
        _current = null;
        _free.Dispose();
        _full.Dispose();
    }
}
