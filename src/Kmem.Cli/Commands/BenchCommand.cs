using System.Buffers;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.Json;
using Kmem.Diagnostics;

namespace Kmem.Cli.Commands;

/// <summary>
/// <c>kmem bench</c>: a quick (well under a minute) comparison of kmem's fast paths with user-space allocators.
/// Every case is one alloc+free pair per operation. Method: boot, warm every case up and size its loop so one round
/// takes about <c>--round-ms</c>; then run <c>--rounds</c> rounds, each running every case once in turn (interleaved,
/// so a noisy neighbour hurts all cases alike), and report the median round per case. For careful numbers use
/// bench/Kmem.Benchmarks (BenchmarkDotNet); this is the smoke test anyone can run.
/// </summary>
public static unsafe class BenchCommand
{
    /// <summary>One case: runs <c>n</c> alloc+free pairs.</summary>
    private sealed record Case(string Name, string What, Action<long> Run);

    public static int Run(CliArgs args, TextWriter stdout)
    {
        if (args.Has("help"))
        {
            stdout.WriteLine("usage: kmem bench [--json] [--rounds N] [--round-ms MS] [--filter TEXT]\n" +
                             "  each case is an alloc+free pair; ns_per_op is per pair; vs_glibc = ns_per_op / glibc-malloc-64's");
            return 0;
        }
        bool json = args.Has("json");
        int rounds = args.GetInt("rounds", 7);
        int roundMs = args.GetInt("round-ms", 60);
        string? filter = args.Get("filter");
        args.RejectUnknown();
        if (rounds < 1 || rounds > 1000) throw new CliException("--rounds must be between 1 and 1000");
        if (roundMs < 1 || roundMs > 10_000) throw new CliException("--round-ms must be between 1 and 10000");

        using var machine = Machine.Boot(new MachineConfig { RamBytes = 512L << 20, Cpus = Math.Max(1, Math.Min(Environment.ProcessorCount, 255)) });
        var notes = new List<string>();
        var owned = new List<IDisposable>(); // the two-thread cases' workers
        using var disposeOwned = new DisposeAll(owned);
        var cases = BuildCases(machine, notes, owned).Where(c => filter == null || c.Name.Contains(filter, StringComparison.Ordinal)).ToList();

        // The measuring thread stays on CPU 0's per-CPU lists, as a kernel thread bound to one CPU would.
        using var pin = Cpu.Pin(0);
        var iterations = new long[cases.Count];
        for (int i = 0; i < cases.Count; i++) iterations[i] = Calibrate(cases[i], roundMs);
        var samples = new double[cases.Count][];
        for (int i = 0; i < cases.Count; i++) samples[i] = new double[rounds];
        for (int r = 0; r < rounds; r++)
            for (int i = 0; i < cases.Count; i++)
                samples[i][r] = Measure(cases[i], iterations[i]);

        var results = cases.Select((c, i) => (c.Name, c.What, Ns: Median(samples[i]), Min: samples[i].Min(), Max: samples[i].Max())).ToList();
        double? glibc = results.FirstOrDefault(r => r.Name == "glibc-malloc-64").Ns is var g and > 0 ? g : null;
        if (results.FirstOrDefault(r => r.Name == "kmalloc-64-1worker").Ns is var one and > 0
            && results.FirstOrDefault(r => r.Name == "kmalloc-64-2threads").Ns is var two and > 0)
            notes.Add($"kmalloc-64-2threads: {one / two:F2}x kmalloc-64-1worker's throughput (issue 3's target: >= 1.8x on two free cores)");
        if (machine.Pages.CheckInvariants() is { } broken) throw new KmemException("bench: free lists broken: " + broken);

        if (json)
        {
            WriteJson(stdout, results.Select(r => (r.Name, r.Ns, glibc)).ToList(), rounds, notes);
            return 0;
        }
        stdout.WriteLine($"kmem bench: {MachineInfo()["cpu"]}, {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}");
        stdout.WriteLine($"{rounds} interleaved rounds of ~{roundMs} ms per case; median ns per alloc+free pair");
        stdout.WriteLine();
        stdout.WriteLine($"{"case",-22} {"ns/op",8} {"min",8} {"max",8} {"vs glibc",9}  what");
        foreach (var r in results)
            stdout.WriteLine($"{r.Name,-22} {r.Ns,8:F1} {r.Min,8:F1} {r.Max,8:F1} {(glibc is { } gl ? (r.Ns / gl).ToString("F2") : "-"),9}  {r.What}");
        foreach (var n in notes) stdout.WriteLine(n);
        return 0;
    }

    private static List<Case> BuildCases(Machine m, List<string> notes, List<IDisposable> owned)
    {
        var pa = m.Pages;
        var cases = new List<Case>
        {
            new("alloc_pages-0", "alloc_pages(GFP_KERNEL, 0) + __free_pages", n =>
            {
                for (long i = 0; i < n; i++) pa.FreePages(pa.AllocPages(Kmem.Gfp.Kernel, 0), 0);
            }),
            new("alloc_pages-3", "alloc_pages(GFP_KERNEL, 3) + __free_pages", n =>
            {
                for (long i = 0; i < n; i++) pa.FreePages(pa.AllocPages(Kmem.Gfp.Kernel, 3), 3);
            }),
            new("glibc-malloc-64", "NativeMemory.Alloc(64) + Free (glibc malloc)", n =>
            {
                for (long i = 0; i < n; i++) NativeMemory.Free(NativeMemory.Alloc(64));
            }),
            new("glibc-aligned-4096", "NativeMemory.AlignedAlloc(4096, 4096) + AlignedFree", n =>
            {
                for (long i = 0; i < n; i++) NativeMemory.AlignedFree(NativeMemory.AlignedAlloc(4096, 4096));
            }),
        };
        if (NativeAllocators.Glibc is { } glibc)
        {
            // glibc's allocator itself, called as the peers are: what NativeMemory adds on top is the P/Invoke's GC transition.
            var malloc = glibc.Malloc;
            var free = glibc.Free;
            cases.Insert(3, new("glibc-fnptr-64", "glibc malloc(64) + free through a function pointer, as the peers are called", n =>
            {
                for (long i = 0; i < n; i++) free(malloc(64));
            }));
        }
        AddSlabCases(m, cases, notes);
        AddThreadCases(m, cases, notes, owned);
        AddVmallocCases(m, cases, notes);
        foreach (var peer in new[] { ("mimalloc", NativeAllocators.Mimalloc), ("jemalloc", NativeAllocators.Jemalloc) })
        {
            if (peer.Item2 is not { } a)
            {
                string reason = NativeAllocators.UnavailableReason(peer.Item1) ?? "not loaded";
                notes.Add($"{peer.Item1}: unavailable ({reason}; Debian: apt-get install {(peer.Item1 == "mimalloc" ? "libmimalloc2.0" : "libjemalloc2")})");
                continue;
            }
            var malloc = a.Malloc;
            var free = a.Free;
            cases.Add(new($"{a.Name}-64", $"{a.Name} malloc(64) + free ({a.Library})", n =>
            {
                for (long i = 0; i < n; i++) free(malloc(64));
            }));
        }
        cases.Add(new("arraypool-64", "ArrayPool<byte>.Shared.Rent(64) + Return", n =>
        {
            var pool = ArrayPool<byte>.Shared;
            for (long i = 0; i < n; i++) pool.Return(pool.Rent(64));
        }));
        cases.Add(new("new-byte-64", "new byte[64] (GC; no free)", n =>
        {
            for (long i = 0; i < n; i++) Keep(new byte[64]);
        }));
        return cases;
    }

    /// <summary>The slab layer's cases; a machine without a working slab layer gets a note, not a crash.</summary>
    private static void AddSlabCases(Machine m, List<Case> cases, List<string> notes)
    {
        try
        {
            var slab = m.Slab;
            var cache = slab.CreateCache("bench-64", 64) ?? throw new InvalidOperationException("kmem_cache_create returned NULL");
            var objs = new nint[16];
            cases.Add(new("kmalloc-64", "kmalloc(64, GFP_KERNEL) + kfree", n =>
            {
                for (long i = 0; i < n; i++) slab.Kfree(slab.Kmalloc(64, Kmem.Gfp.Kernel));
            }));
            cases.Add(new("kmem_cache-64", "kmem_cache_alloc + kmem_cache_free (64-byte cache)", n =>
            {
                for (long i = 0; i < n; i++) cache.Free(cache.Alloc(Kmem.Gfp.Kernel));
            }));
            cases.Add(new("kmem_cache-bulk16", "kmem_cache_alloc_bulk(16) + free_bulk; ns per object", n =>
            {
                // One op = one object: n/16 bulk rounds of 16 (n is large, the remainder is noise).
                for (long i = 0; i < n; i += 16)
                {
                    int got = cache.AllocBulk(Kmem.Gfp.Kernel, objs);
                    cache.FreeBulk(objs.AsSpan(0, got));
                }
            }));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            notes.Add($"slab: unavailable ({e.GetType().Name}: {e.Message})");
        }
    }

    /// <summary>
    /// Issue 3's scaling cases, on two <see cref="BenchWorker"/>s (kmem CPUs 0 and 1): <c>kmalloc-64-1worker</c> runs
    /// the pairs on one, <c>kmalloc-64-2threads</c> half on each, so the ratio of the two is the speed-up (printed as
    /// a note); <c>kmalloc-64-xcpu</c> has one thread kmalloc and the other kfree every object (a cross-CPU free
    /// each). Left out, with a note, on one core.
    /// </summary>
    private static void AddThreadCases(Machine m, List<Case> cases, List<string> notes, List<IDisposable> owned)
    {
        if (Environment.ProcessorCount < 2 || m.Config.Cpus < 2)
        {
            notes.Add("kmalloc-64-1worker, kmalloc-64-2threads, kmalloc-64-xcpu: left out (one core)");
            return;
        }
        var slab = m.Slab;
        var w0 = new BenchWorker(0);
        owned.Add(w0);
        var w1 = new BenchWorker(1);
        owned.Add(w1);
        var ring = new HandoffRing();
        Action<long> own = n =>
        {
            for (long i = 0; i < n; i++) slab.Kfree(slab.Kmalloc(64, Kmem.Gfp.Kernel));
        };
        Action<long> produce = n =>
        {
            for (long i = 0; i < n; i++) ring.Push((nint)slab.Kmalloc(64, Kmem.Gfp.Kernel));
        };
        Action<long> consume = n =>
        {
            for (long i = 0; i < n; i++) slab.Kfree((void*)ring.Pop());
        };
        // The one-thread reference for the speed-up runs on a worker too: the measuring thread's own sheaf table
        // and stack sit elsewhere in the address space, which alone can move a pair by a few ns (docs/benchmarks.md).
        cases.Add(new("kmalloc-64-1worker", "kmalloc(64) + kfree on one worker thread (the reference for kmalloc-64-2threads)", n =>
        {
            w0.Start(own, n);
            w0.Wait();
        }));
        cases.Add(new("kmalloc-64-2threads", "two threads, each kmalloc(64) + kfree of its own objects; ns per pair of both together", n =>
        {
            w0.Start(own, n / 2);
            w1.Start(own, n - n / 2);
            w0.Wait();
            w1.Wait();
        }));
        cases.Add(new("kmalloc-64-xcpu", "one thread kmalloc(64)s, the other kfrees (producer/consumer); ns per object", n =>
        {
            ring.Reset();
            w0.Start(produce, n);
            w1.Start(consume, n);
            w0.Wait();
            w1.Wait();
        }));
    }

    private sealed class DisposeAll(List<IDisposable> items) : IDisposable
    {
        public void Dispose()
        {
            foreach (var d in items) d.Dispose();
        }
    }

    /// <summary>
    /// Issue 4's cases: vmalloc(4096) + touch + vfree on the booted machine (lib/test_vmalloc.c's fix_size_alloc_test),
    /// and its floor, one anonymous mmap + touch + munmap of a page (what any real mapping costs).
    /// </summary>
    private static void AddVmallocCases(Machine m, List<Case> cases, List<string> notes)
    {
        try
        {
            var vm = m.Vmalloc;
            byte* probe = vm.Vmalloc(4096);
            if (probe == null) throw new InvalidOperationException("vmalloc(4096) returned NULL");
            vm.Vfree(probe);
            cases.Add(new("vmalloc-1page", "vmalloc(4096) + touch + vfree (fix_size_alloc_test)", n =>
            {
                for (long i = 0; i < n; i++)
                {
                    byte* p = vm.Vmalloc(4096);
                    *p = 1;
                    vm.Vfree(p);
                }
            }));
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            notes.Add($"vmalloc: unavailable ({e.GetType().Name}: {e.Message})");
        }
        if (!OperatingSystem.IsLinux())
        {
            notes.Add("mmap-1page: unavailable (not Linux)");
            return;
        }
        cases.Add(new("mmap-1page", "mmap(4096, anonymous) + touch + munmap: the floor of a real mapping", n =>
        {
            for (long i = 0; i < n; i++)
            {
                nint p = Kmem.Physical.Libc.mmap(0, 4096, Kmem.Physical.Libc.PROT_READ | Kmem.Physical.Libc.PROT_WRITE,
                    Kmem.Physical.Libc.MAP_PRIVATE | Kmem.Physical.Libc.MAP_ANONYMOUS, -1, 0);
                if (p == -1) throw new KmemException("bench: mmap of one anonymous page failed");
                *(byte*)p = 1;
                Kmem.Physical.Libc.munmap(p, 4096);
            }
        }));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Keep(byte[] b) => GC.KeepAlive(b);

    /// <summary>Warm up (JIT tiers, pcp lists, malloc arenas) and find the loop count that takes about <paramref name="roundMs"/>.</summary>
    private static long Calibrate(Case c, int roundMs)
    {
        long n = 1000;
        var sw = Stopwatch.StartNew();
        // Warm-up long enough for tiered compilation to reach the optimised code (~30 calls plus OSR).
        while (sw.ElapsedMilliseconds < Math.Max(50, roundMs)) c.Run(n);
        while (true)
        {
            sw.Restart();
            c.Run(n);
            double ms = sw.Elapsed.TotalMilliseconds;
            if (ms >= roundMs / 4.0 || n > 1L << 34) return Math.Max(1, (long)(n * (roundMs / Math.Max(ms, 0.001))));
            n *= 4;
        }
    }

    private static double Measure(Case c, long n)
    {
        long t0 = Stopwatch.GetTimestamp();
        c.Run(n);
        long t1 = Stopwatch.GetTimestamp();
        return (t1 - t0) * (1e9 / Stopwatch.Frequency) / n;
    }

    private static double Median(double[] xs)
    {
        var s = xs.Order().ToArray();
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    /// <summary>CPU model, cores, OS and runtime: recorded with every number.</summary>
    public static Dictionary<string, string> MachineInfo()
    {
        string cpu = "unknown";
        try
        {
            if (File.Exists("/proc/cpuinfo"))
                cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException) { }
        return new Dictionary<string, string>
        {
            ["cpu"] = cpu,
            ["cores"] = Environment.ProcessorCount.ToString(),
            ["os"] = RuntimeInformation.OSDescription,
            ["arch"] = RuntimeInformation.ProcessArchitecture.ToString(),
            ["dotnet"] = RuntimeInformation.FrameworkDescription,
        };
    }

    private static void WriteJson(TextWriter stdout, List<(string Name, double Ns, double? Glibc)> results, int rounds, List<string> notes)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartObject("machine");
            foreach (var (k, v) in MachineInfo()) if (k != "cores") w.WriteString(k, v);
            w.WriteNumber("cores", Environment.ProcessorCount);
            w.WriteEndObject();
            w.WriteNumber("rounds", rounds);
            w.WriteStartArray("results");
            foreach (var r in results)
            {
                w.WriteStartObject();
                w.WriteString("name", r.Name);
                w.WriteNumber("ns_per_op", Math.Round(r.Ns, 2));
                if (r.Glibc is { } g) w.WriteNumber("vs_glibc", Math.Round(r.Ns / g, 3));
                else w.WriteNull("vs_glibc");
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("notes");
            foreach (var n in notes) w.WriteStringValue(n);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        stdout.WriteLine(System.Text.Encoding.UTF8.GetString(ms.ToArray()));
    }
}
