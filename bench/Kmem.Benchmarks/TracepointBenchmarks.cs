using BenchmarkDotNet.Attributes;
using Kmem;
using Kmem.Physical;
using Kmem.Tracing.Emit;

namespace Kmem.Benchmarks;

/// <summary>
/// alloc_pages(GFP_KERNEL, 0) + __free_pages with the mm_page_alloc/mm_page_free tracepoints off (the one static-bool
/// branch each) and on (recording into a 64 Ki-record overwrite ring). The "build without the calls" baseline is
/// the same benchmark on the commit before the hooks (git stash the two PageAllocator lines) — BenchmarkDotNet
/// cannot compile both in one run.
/// </summary>
[MemoryDiagnoser]
public unsafe class TracepointBenchmarks
{
    private Machine _m = null!;
    private TraceRingBuffer _buffer = null!;

    [Params(false, true)]
    public bool Tracing { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _m = Machine.Boot();
        _buffer = new TraceRingBuffer(_m.CpuCount, 1 << 16);
        Tracepoints.Start(_buffer);
        Tracepoints.Enable(Kmem.Tracing.EventKind.MmPageAlloc, Tracing);
        Tracepoints.Enable(Kmem.Tracing.EventKind.MmPageFree, Tracing);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        Tracepoints.Stop();
        _buffer.Dispose();
        _m.Dispose();
    }

    [Benchmark]
    public void AllocFreePage()
    {
        PageFrame* p = _m.Pages.AllocPages(Gfp.Kernel, 0);
        _m.Pages.FreePages(p, 0);
    }
}
