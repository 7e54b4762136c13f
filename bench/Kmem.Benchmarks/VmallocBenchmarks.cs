using BenchmarkDotNet.Attributes;
using Kmem;
using Kmem.Physical;

namespace Kmem.Benchmarks;

/// <summary>
/// lib/test_vmalloc.c's cases, one vmalloc+vfree (or the case's unit) per operation, on an x86_64 machine of
/// 1 GiB, 2 CPUs. Baseline in the same run: one mmap + touch + munmap of a memfd page, the floor of any real
/// mapping (vmalloc of a page is one mmap of the frame at its address, and vfree one mmap back to PROT_NONE).
/// Linux reports about 0.5–1.7 µs per fix_size vmalloc+vfree; the target here is fix_size ≤ 2 × the floor.
/// </summary>
[MemoryDiagnoser]
public unsafe class VmallocBenchmarks
{
    private Machine _m = null!;
    private int _memfd = -1;
    private Random _rng = new(1);
    private readonly List<nint> _busy = new();

    [GlobalSetup]
    public void Setup()
    {
        _m = Machine.Boot(new MachineConfig { RamBytes = 1L << 30 });
        ReadOnlySpan<byte> name = "bench\0"u8;
        fixed (byte* n = name) _memfd = Libc.memfd_create(n, Libc.MFD_CLOEXEC);
        Libc.ftruncate(_memfd, 4096);
    }

    /// <summary>full_fit_alloc_test's setup: lazy_max_pages pairs of one-page areas, every second one freed and purged (holes).</summary>
    [GlobalSetup(Target = nameof(FullFitAlloc))]
    public void SetupFullFit()
    {
        Setup();
        var vm = _m.Vmalloc;
        // Linux: junk_length = fls(num_online_cpus()) * 32 MiB / PAGE_SIZE = lazy_max_pages (16384 on 2 CPUs), i.e.
        // 2 x 16384 live one-page areas during setup. Each isolated area costs two host VMAs (mapping + guard gap), so
        // that would pass vm.max_map_count (65530 by default); the junk is capped to fit, leaving room for the runtime.
        long maxMapCount = long.Parse(File.ReadAllText("/proc/sys/vm/max_map_count").Trim());
        long junk = Math.Min(vm.LazyMaxPages, (maxMapCount - 8192) / 4);
        var junkPtrs = new List<nint>();
        for (long i = 0; i < junk; i++)
        {
            _busy.Add((nint)vm.Vmalloc(4096));
            junkPtrs.Add((nint)vm.Vmalloc(4096));
        }
        foreach (var p in junkPtrs) vm.Vfree((void*)p);
        vm.PurgeVmapAreaLazy();
    }

    /// <summary>long_busy_list_alloc_test's setup: 15000 busy one-page areas.</summary>
    [GlobalSetup(Target = nameof(LongBusyListAlloc))]
    public void SetupLongBusy()
    {
        Setup();
        for (int i = 0; i < 15000; i++) _busy.Add((nint)_m.Vmalloc.Vmalloc(4096));
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var p in _busy) _m.Vmalloc.Vfree((void*)p);
        _busy.Clear();
        _m.Dispose();
        Libc.close(_memfd);
    }

    [Benchmark(Baseline = true, Description = "mmap-1page (mmap+touch+munmap)")]
    public void MmapMunmapOnePage()
    {
        nint p = Libc.mmap(0, 4096, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_SHARED, _memfd, 0);
        *(byte*)p = 0;
        Libc.munmap(p, 4096);
    }

    [Benchmark(Description = "fix_size_alloc_test (vmalloc-1page)")]
    public void FixSizeAlloc()
    {
        byte* p = _m.Vmalloc.Vmalloc(4096);
        *p = 0;
        _m.Vmalloc.Vfree(p);
    }

    [Benchmark(Description = "full_fit_alloc_test")]
    public void FullFitAlloc()
    {
        byte* p = _m.Vmalloc.Vmalloc(4096);
        *p = 1;
        _m.Vmalloc.Vfree(p);
    }

    [Benchmark(Description = "long_busy_list_alloc_test (100+1 pages)")]
    public void LongBusyListAlloc()
    {
        byte* p1 = _m.Vmalloc.Vmalloc(100 * 4096);
        byte* p2 = _m.Vmalloc.Vmalloc(4096);
        *p1 = 0;
        *p2 = 1;
        _m.Vmalloc.Vfree(p1);
        _m.Vmalloc.Vfree(p2);
    }

    [Benchmark(Description = "random_size_alloc_test (1-100 pages)")]
    public void RandomSizeAlloc()
    {
        int n = _rng.Next(1, 101);
        byte* p = _m.Vmalloc.Vmalloc((nuint)(n * 4096));
        *p = 1;
        _m.Vmalloc.Vfree(p);
    }

    [Benchmark(Description = "fix_align_alloc_test (5 pages, align 32K, zeroed)")]
    public void FixAlignAlloc()
    {
        byte* p = _m.Vmalloc.VmallocNode(5 * 4096, 16384 << 1, Gfp.Kernel | Gfp.Zero);
        _m.Vmalloc.Vfree(p);
    }

    [Benchmark(Description = "random_size_align_alloc_test")]
    public void RandomSizeAlignAlloc()
    {
        int rnd = _rng.Next(256);
        ulong align = 1UL << (rnd % 23);
        nuint size = (nuint)((rnd % 10 + 1) * 4096);
        byte* p = _m.Vmalloc.VmallocNode(size, align, Gfp.Kernel | Gfp.Zero);
        _m.Vmalloc.Vfree(p);
    }

    [Benchmark(Description = "align_shift_alloc_test (64 aligns, expected failures)")]
    public int AlignShiftAlloc()
    {
        int ok = 0;
        for (int i = 0; i < 64; i++)
        {
            byte* p = _m.Vmalloc.VmallocNode(4096, 1UL << i, Gfp.Kernel | Gfp.Zero);
            if (p == null) break;
            ok++;
            _m.Vmalloc.Vfree(p);
        }
        return ok;
    }
}
