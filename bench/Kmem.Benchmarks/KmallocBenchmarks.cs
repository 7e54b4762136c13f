using BenchmarkDotNet.Attributes;
using Kmem.Diagnostics;
using Kmem.Slab;

namespace Kmem.Benchmarks;

/// <summary>
/// kmalloc(64)+kfree and kmem_cache_alloc+free against the user-space baselines, single thread. One operation =
/// one alloc+free pair (bulk: one object). Issue 3's targets: kmalloc ≤ 0.5 × glibc and no slower than mimalloc;
/// kmem_cache pair ≤ 10 ns; bulk ≤ 5 ns per object.
/// </summary>
[Config(typeof(QuickConfig))]
public unsafe class KmallocBenchmarks
{
    private Machine _m = null!;
    private SlabAllocator _slab = null!;
    private KmemCache _cache = null!;
    private readonly nint[] _bulk = new nint[16];

    [GlobalSetup]
    public void Setup()
    {
        Baselines.Announce();
        _m = Machine.Boot(new MachineConfig { RamBytes = 512L << 20, Cpus = 2 });
        _slab = _m.Slab;
        _cache = _slab.CreateCache("bench-64", 64)!;
        Cpu.Pin(0);
    }

    [GlobalCleanup]
    public void Cleanup() => _m.Dispose();

    [Benchmark(Baseline = true, Description = "glibc malloc(64)+free (NativeMemory)")]
    public void Glibc() => Baselines.NativeMemoryPair(64);

    [Benchmark(Description = "glibc malloc(64)+free (fn ptr)")]
    public void GlibcFnPtr() => Baselines.Pair(NativeAllocators.Glibc, 64);

    [Benchmark(Description = "mimalloc(64)+free")]
    public void Mimalloc() => Baselines.Pair(NativeAllocators.Mimalloc, 64);

    [Benchmark(Description = "jemalloc(64)+free")]
    public void Jemalloc() => Baselines.Pair(NativeAllocators.Jemalloc, 64);

    [Benchmark(Description = "ArrayPool.Rent(64)+Return")]
    public void ArrayPool() => Baselines.ArrayPoolPair(64);

    [Benchmark(Description = "new byte[64]")]
    public byte[] NewByteArray() => Baselines.NewArray(64);

    [Benchmark(Description = "kmalloc(64)+kfree")]
    public void Kmalloc64() => _slab.Kfree(_slab.Kmalloc(64, Kmem.Gfp.Kernel));

    [Benchmark(Description = "kmem_cache_alloc+free (64)")]
    public void KmemCache64() => _cache.Free(_cache.Alloc(Kmem.Gfp.Kernel));

    [Benchmark(Description = "kmem_cache bulk 16 (per object)", OperationsPerInvoke = 16)]
    public void KmemCacheBulk16()
    {
        int n = _cache.AllocBulk(Kmem.Gfp.Kernel, _bulk);
        _cache.FreeBulk(_bulk.AsSpan(0, n));
    }
}

/// <summary>
/// Scaling: one thread doing N kmalloc(64)+kfree pairs, two threads each doing N/2 on their own objects (target:
/// ≥ 1.8× the one-thread throughput, i.e. ≤ 0.56× its time per op), and a producer/consumer pair where one thread
/// kfree()s what the other kmalloc()ed (reported). Each invocation runs <see cref="Ops"/> pairs in total; ns/op is per
/// pair, so throughput ratio = one-thread ns/op ÷ two-thread ns/op.
/// </summary>
[Config(typeof(QuickConfig))]
public unsafe class KmallocThreadBenchmarks
{
    private const int Ops = 200_000;
    private Machine _m = null!;
    private SlabAllocator _slab = null!;

    [GlobalSetup]
    public void Setup()
    {
        _m = Machine.Boot(new MachineConfig { RamBytes = 512L << 20, Cpus = 2 });
        _slab = _m.Slab;
    }

    [GlobalCleanup]
    public void Cleanup() => _m.Dispose();

    private void Own(int cpu, int n)
    {
        using var pin = Cpu.Pin(cpu);
        for (int i = 0; i < n; i++) _slab.Kfree(_slab.Kmalloc(64, Kmem.Gfp.Kernel));
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Ops, Description = "1 thread, own objects")]
    public void OneThread()
    {
        var t = new Thread(() => Own(0, Ops));
        t.Start();
        t.Join();
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "2 threads, own objects")]
    public void TwoThreads()
    {
        var a = new Thread(() => Own(0, Ops / 2));
        var b = new Thread(() => Own(1, Ops / 2));
        a.Start();
        b.Start();
        a.Join();
        b.Join();
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "producer/consumer (cross-CPU kfree)")]
    public void ProducerConsumer()
    {
        // A single-producer single-consumer ring of 1024 slots; indices published with Volatile.
        var ring = new nint[1024];
        long head = 0, tail = 0;
        var producer = new Thread(() =>
        {
            using var pin = Cpu.Pin(0);
            for (int i = 0; i < Ops; i++)
            {
                nint p = (nint)_slab.Kmalloc(64, Kmem.Gfp.Kernel);
                var spin = new SpinWait(); // spins, then yields: the other thread may not be running at all
                while (Volatile.Read(ref head) - Volatile.Read(ref tail) >= ring.Length) spin.SpinOnce();
                ring[head & (ring.Length - 1)] = p;
                Volatile.Write(ref head, head + 1);
            }
        });
        var consumer = new Thread(() =>
        {
            using var pin = Cpu.Pin(1);
            for (int i = 0; i < Ops; i++)
            {
                var spin = new SpinWait();
                while (Volatile.Read(ref tail) == Volatile.Read(ref head)) spin.SpinOnce();
                _slab.Kfree((void*)ring[tail & (ring.Length - 1)]);
                Volatile.Write(ref tail, tail + 1);
            }
        });
        producer.Start();
        consumer.Start();
        producer.Join();
        consumer.Join();
    }
}
