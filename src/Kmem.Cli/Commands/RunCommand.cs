using System.Text.Json;
using Kmem.Proc;
using Kmem.Scenario;

namespace Kmem.Cli.Commands;

/// <summary>
/// <c>kmem run</c>: the main job. Boots a machine (default x86_64, 512 MiB, 2 CPUs) and runs <see cref="MainScenario"/>:
/// page allocator, slab, fork/exec, network receive in softirq, file-system caching, memory pressure with reclaim and
/// the OOM killer, module loading with vmalloc (and HIGHMEM on x86_32), then teardown and a leak check.
/// </summary>
public static class RunCommand
{
    public const string Usage =
        "usage: kmem run [--seed N] [--length X] [--json] [--trace-out FILE] [--no-progress] [boot options]\n" +
        "  --trace-out FILE  record kmem's tracepoints during the run and write them in ftrace format (.zst/.gz/plain)\n" +
        "  --length X   scale every phase's work (default 1; 0.2 is quick, 5 is long)\n" +
        "  --json       print the summary as JSON on stdout (progress still goes to stderr)";

    public static int Run(CliArgs args, TextWriter stdout)
    {
        if (args.Has("help"))
        {
            stdout.WriteLine($"{Usage}\n{BootOptions.Help}");
            return 0;
        }
        var cfg = BootOptions.Parse(args);
        int seed = args.GetInt("seed", 1);
        string? lengthText = args.Get("length");
        double length = 1;
        if (lengthText != null && (!double.TryParse(lengthText, System.Globalization.CultureInfo.InvariantCulture, out length) || length <= 0 || length > 100))
            throw new CliException($"--length: '{lengthText}' is not a number between 0 and 100");
        bool json = args.Has("json");
        string? traceOut = args.Get("trace-out");
        if (args.Has("trace-out") && string.IsNullOrEmpty(traceOut)) throw new CliException("--trace-out needs a file name");
        bool progress = !args.Has("no-progress");
        args.RejectUnknown();

        using var m = BootOptions.Boot(cfg);
        // Reports (OOM kills, allocation failures) go to the kernel log; show the important ones as dmesg would.
        var text = json ? TextWriter.Null : stdout;
        text.WriteLine($"kmem: booted {cfg.Profile.Name}, {m.TotalRamPages * 4 / 1024} MiB managed in {m.Pages.Zones.Count} zones, {cfg.Cpus} CPUs, min_free_kbytes {m.Pages.MinFreeKbytes}");
        text.WriteLine();

        var observer = new PhaseBars(text, progress && !json);
        MainScenario.Result r;
        // 2M records per CPU (80 bytes each): room for a default-length run without overwriting its beginning.
        using (var trace = traceOut != null ? Tracing.Emit.TraceSession.Start(m, 1 << 21) : null)
        {
            using (var scenario = new MainScenario(m, new ScenarioOptions { Seed = seed, Length = length }, observer))
                r = scenario.Run();
            if (trace != null)
            {
                trace.Stop();
                long lines = trace.WriteTo(traceOut!);
                (json ? Console.Error : stdout).WriteLine($"trace: {lines} events written to {traceOut}{(trace.Lost > 0 ? $" ({trace.Lost} lost: the buffer overflowed)" : "")}");
            }
        }

        if (json)
        {
            using var w = new Utf8JsonWriter(Console.OpenStandardOutput(), new JsonWriterOptions { Indented = true });
            MainScenario.WriteJson(r, w);
            w.Flush();
            Console.Out.WriteLine();
            return r.Clean ? 0 : 1;
        }
        PrintSummary(r, stdout);
        return r.Clean ? 0 : 1;
    }

    private static void PrintSummary(MainScenario.Result r, TextWriter o)
    {
        o.WriteLine();
        o.WriteLine("== Allocations by GFP type");
        o.WriteLine($"{"type",-30} {"allocations",12} {"failures",10} {"blocked ms",11} {"in softirq",11} {"irqs off/lock",14}");
        foreach (var e in r.Gfp)
            o.WriteLine($"{e.Name,-30} {e.Allocations,12} {e.Failures,10} {e.BlockedMs,11:F1} {e.InSoftirq + e.InHardirq,11} {e.InOtherAtomic,14}");
        o.WriteLine("GFP_ATOMIC and GFP_NOWAIT never block: they fail instead. GFP_KERNEL may sleep in reclaim; GFP_NOIO and");
        o.WriteLine("GFP_NOFS may too, but reclaim may not start I/O (NOIO) or call into filesystems (NOFS) on their behalf.");
        o.WriteLine();
        o.WriteLine("== Reclaim and the OOM killer");
        var rc = r.Reclaim;
        o.WriteLine($"kswapd wakeups {rc.KswapdWakeups}, direct reclaim stalls {rc.DirectReclaimStalls}, pages scanned {rc.PagesScanned}, reclaimed {rc.PagesReclaimed}");
        o.WriteLine($"swapped out {rc.PagesSwappedOut}, swapped in {rc.PagesSwappedIn}, page faults {rc.PageFaults} ({rc.MajorFaults} major), compaction stalls {rc.CompactStalls}, OOM kills {r.OomKills}");
        foreach (var l in r.OomLog) o.WriteLine("  " + l.Split('\n')[0]);
        o.WriteLine();
        o.WriteLine("== Kernel vs user: the same memory asked for twice");
        var k = r.KernelVsUser;
        o.WriteLine($"a process mmap()s {k.Bytes >> 20} MiB in {k.UserMmapMs:F3} ms: {k.UserVmSizeKb} kB of address space, {k.UserRssAfterMmapKb} kB resident;");
        o.WriteLine($"  touching {k.UserTouchedPages} pages makes {k.UserRssAfterTouchKb} kB resident (demand paging); those pages are pageable and only virtually contiguous.");
        o.WriteLine($"the kernel asks alloc_pages for {k.Bytes >> 20} MiB in {k.KernelAllocMs:F3} ms: {k.KernelAllocatedKb} kB resident at once, in {k.KernelBlocks} physically");
        o.WriteLine($"  contiguous order-{k.KernelBlockOrder} blocks, pinned (never swapped); MemFree dropped by {k.KernelFreeDropKb} kB.");
        o.WriteLine();
        o.WriteLine("== /proc/buddyinfo at boot, under pressure, at the end");
        o.Write(r.BuddyinfoAtBoot);
        o.Write(r.BuddyinfoUnderPressure);
        o.Write(r.BuddyinfoAtEnd);
        o.WriteLine();
        o.WriteLine("== /proc/slabinfo under pressure (excerpt)");
        o.Write(r.SlabinfoExcerpt);
        o.WriteLine();
        o.WriteLine("== /proc/vmallocinfo with modules loaded (excerpt)");
        o.Write(r.VmallocinfoExcerpt);
        if (r.Highmem.Length > 0)
        {
            o.WriteLine();
            o.WriteLine("== HIGHMEM and the vmalloc window (x86_32)");
            o.Write(r.Highmem);
        }
        o.WriteLine();
        o.WriteLine("== Leak check");
        o.WriteLine($"{r.LeakedPages} pages and {r.LeakedObjects} slab objects not returned; allocator state {(r.Inconsistency == null ? "consistent" : "BROKEN: " + r.Inconsistency)}");
        o.WriteLine(r.Clean ? "OK: every page and object went back." : "FAILED: see above.");
    }

    /// <summary>One progress bar per phase, then the phase's one-line summary.</summary>
    private sealed class PhaseBars(TextWriter o, bool enabled) : IScenarioObserver
    {
        private ProgressBar? _bar;
        private string _name = "";

        public void PhaseStarted(string name, long totalSteps)
        {
            _name = name;
            _bar = new ProgressBar(o, name, totalSteps, enabled);
        }

        public void PhaseProgress(long doneSteps) => _bar?.Update(doneSteps);

        public void PhaseFinished(string name, string summary)
        {
            _bar?.Finish();
            o.WriteLine($"[{_name}] {summary}");
        }
    }
}
