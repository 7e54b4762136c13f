using BenchmarkDotNet.Attributes;
using Kmem.Slab;
using Kmem.Tracing.Emit;

namespace Kmem.Benchmarks;

/// <summary>
/// kmalloc(64)+kfree and kmem_cache_alloc+free (64-byte cache) with the slab tracepoints (kmalloc, kfree,
/// kmem_cache_alloc, kmem_cache_free) off — the one static-bool branch per entry point — and on, recording into a
/// <see cref="TraceSession"/>'s per-CPU overwrite ring (64 Ki records per CPU; the ring wraps and counts lost events,
/// as ftrace's overwrite mode does). The third variant issue 6 asks for, a build without the four tracepoint lines,
/// cannot run in the same BenchmarkDotNet run (it is a different compilation of Kmem.dll): see docs/benchmarks.md,
/// "Tracepoints", for that A/B and how it was made.
/// </summary>
[Config(typeof(QuickConfig))]
public unsafe class SlabTracepointBenchmarks
{
    private Machine _m = null!;
    private SlabAllocator _slab = null!;
    private KmemCache _cache = null!;
    private TraceSession? _session;
    private Cpu.PinScope _pin;

    [Params(false, true)]
    public bool Tracing { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _m = Machine.Boot(new MachineConfig { RamBytes = 512L << 20, Cpus = 2 });
        _slab = _m.Slab;
        _cache = _slab.CreateCache("bench-64", 64)!;
        _pin = Cpu.Pin(0);
        if (Tracing)
            _session = TraceSession.Start(_m, 1 << 16);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _session?.Dispose();
        _session = null;
        _pin.Dispose();
        _m.Dispose();
    }

    [Benchmark(Description = "kmalloc(64)+kfree")]
    public void Kmalloc64() => _slab.Kfree(_slab.Kmalloc(64, Kmem.Gfp.Kernel));

    [Benchmark(Description = "kmem_cache_alloc+free (64)")]
    public void KmemCache64() => _cache.Free(_cache.Alloc(Kmem.Gfp.Kernel));
}
