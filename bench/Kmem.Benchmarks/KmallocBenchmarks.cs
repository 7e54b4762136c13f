using System.Runtime.CompilerServices;
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
/// <remarks>
/// The workers are two <see cref="BenchWorker"/>s (threads created once, on kmem CPUs 0 and 1, woken per invocation);
/// the producer/consumer pair hands objects over through a <see cref="HandoffRing"/>. The ALU rows run the same
/// split with a loop that touches no memory: they show how far the machine itself scales to two threads (on a VM
/// whose two vCPUs share a core, or a CPU quota, it does not), which is the ceiling for the allocator's rows.
/// </remarks>
[Config(typeof(QuickConfig))]
public unsafe class KmallocThreadBenchmarks
{
    private const int Ops = 1_000_000;
    private Machine _m = null!;
    private SlabAllocator _slab = null!;
    private BenchWorker _w0 = null!, _w1 = null!;
    private Action<long> _own = null!, _alu = null!, _produce = null!, _consume = null!; // made once: no allocation per invocation
    private long _sink;
    private readonly HandoffRing _ring = new();

    [GlobalSetup]
    public void Setup()
    {
        _m = Machine.Boot(new MachineConfig { RamBytes = 512L << 20, Cpus = 2 });
        _slab = _m.Slab;
        _w0 = new BenchWorker(0);
        _w1 = new BenchWorker(1);
        _own = Own;
        _alu = Alu;
        _produce = Produce;
        _consume = Consume;
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _w0.Dispose();
        _w1.Dispose();
        _m.Dispose();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Own(long n)
    {
        SlabAllocator slab = _slab;
        for (long i = 0; i < n; i++) slab.Kfree(slab.Kmalloc(64, Kmem.Gfp.Kernel));
    }

    [Benchmark(Baseline = true, OperationsPerInvoke = Ops, Description = "1 thread, own objects")]
    public void OneThread()
    {
        _w0.Start(_own, Ops);
        _w0.Wait();
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "2 threads, own objects")]
    public void TwoThreads()
    {
        _w0.Start(_own, Ops / 2);
        _w1.Start(_own, Ops / 2);
        _w0.Wait();
        _w1.Wait();
    }

    /// <summary>About as many cycles per step as a kmalloc+kfree pair, without memory traffic.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Alu(long n)
    {
        ulong x = (ulong)n;
        for (long i = 0; i < n; i++)
        {
            x = x * 6364136223846793005UL + 1442695040888963407UL;
            x ^= x >> 17;
            x = x * 6364136223846793005UL + 1442695040888963407UL;
            x ^= x >> 13;
            x = x * 6364136223846793005UL + 1442695040888963407UL;
            x ^= x >> 11;
        }
        Volatile.Write(ref _sink, (long)x);
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "1 thread, ALU loop (machine reference)")]
    public void OneThreadAlu()
    {
        _w0.Start(_alu, Ops);
        _w0.Wait();
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "2 threads, ALU loop (machine reference)")]
    public void TwoThreadsAlu()
    {
        _w0.Start(_alu, Ops / 2);
        _w1.Start(_alu, Ops / 2);
        _w0.Wait();
        _w1.Wait();
    }

    [Benchmark(OperationsPerInvoke = Ops, Description = "producer/consumer (cross-CPU kfree)")]
    public void ProducerConsumer()
    {
        _ring.Reset();
        _w0.Start(_produce, Ops);
        _w1.Start(_consume, Ops);
        _w0.Wait();
        _w1.Wait();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Produce(long n)
    {
        SlabAllocator slab = _slab;
        for (long i = 0; i < n; i++) _ring.Push((nint)slab.Kmalloc(64, Kmem.Gfp.Kernel));
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void Consume(long n)
    {
        SlabAllocator slab = _slab;
        for (long i = 0; i < n; i++) slab.Kfree((void*)_ring.Pop());
    }
}
