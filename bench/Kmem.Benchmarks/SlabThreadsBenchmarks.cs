using BenchmarkDotNet.Attributes;
using Kmem.Slab;

namespace Kmem.Benchmarks;

/// <summary>
/// Slab scalability (issue 3, Performance): N threads each allocating and freeing their own kmalloc-64 objects
/// (target: 2 threads &gt;= 1.8x one thread's throughput, so Threads=2 should take &lt;= 1.11x the time of Threads=1
/// for twice the work), and a producer/consumer pair (one thread frees what the other allocated), reported.
/// </summary>
[MemoryDiagnoser]
public unsafe class SlabThreadsBenchmarks
{
    private const int OpsPerThread = 1 << 20;
    private Machine _machine = null!;
    private SlabAllocator _slab = null!;

    [Params(1, 2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _machine = Machine.Boot(new MachineConfig { RamBytes = 256L << 20, Cpus = 2 });
        _slab = _machine.Slab;
    }

    [GlobalCleanup]
    public void Cleanup() => _machine.Dispose();

    /// <summary>Each thread: OpsPerThread kmalloc(64)+kfree pairs. Report ns per pair per thread = Mean / OpsPerThread.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerThread)]
    public void OwnObjects()
    {
        var threads = new Thread[Threads];
        for (int t = 0; t < Threads; t++)
        {
            threads[t] = new Thread(() =>
            {
                for (int i = 0; i < OpsPerThread; i++)
                {
                    void* p = _slab.Kmalloc(64, Gfp.Kernel);
                    _slab.Kfree(p);
                }
            });
            threads[t].Start();
        }
        foreach (var t in threads) t.Join();
    }

    /// <summary>Producer allocates batches of 64, the consumer frees them (cross-thread frees). Threads is ignored.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerThread)]
    public void ProducerConsumer()
    {
        const int Batch = 64;
        var ring = new nint[2][];
        ring[0] = new nint[Batch];
        ring[1] = new nint[Batch];
        using var full0 = new SemaphoreSlim(0);
        using var empty0 = new SemaphoreSlim(2);
        var producer = new Thread(() =>
        {
            for (int b = 0; b < OpsPerThread / Batch; b++)
            {
                empty0.Wait();
                var buf = ring[b & 1];
                for (int i = 0; i < Batch; i++) buf[i] = (nint)_slab.Kmalloc(64, Gfp.Kernel);
                full0.Release();
            }
        });
        var consumer = new Thread(() =>
        {
            for (int b = 0; b < OpsPerThread / Batch; b++)
            {
                full0.Wait();
                var buf = ring[b & 1];
                for (int i = 0; i < Batch; i++) _slab.Kfree((void*)buf[i]);
                empty0.Release();
            }
        });
        producer.Start();
        consumer.Start();
        producer.Join();
        consumer.Join();
    }
}
