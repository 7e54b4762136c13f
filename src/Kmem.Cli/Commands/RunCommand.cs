using System.Diagnostics;
using Kmem.PageAlloc;
using Kmem.Proc;
using Kmem.Scenario;
using Kmem.Slab;

namespace Kmem.Cli.Commands;

/// <summary>
/// <c>kmem run</c>: the main job. For now: boot the default machine (x86_64, 512 MiB, 2 CPUs), run a page-allocation
/// workload of mixed orders and GFP types from two threads, and print buddyinfo before, at peak and after, with a summary.
/// </summary>
public static class RunCommand
{
    public static int Run(CliArgs args, TextWriter stdout)
    {
        if (args.Has("help"))
        {
            stdout.WriteLine($"usage: kmem run [--ops N] [--seed N] [--threads N] [--no-progress] [boot options]\n{BootOptions.Help}");
            return 0;
        }
        var cfg = BootOptions.Parse(args);
        long ops = args.GetLong("ops", 200_000);
        int seed = args.GetInt("seed", 1);
        int threads = args.GetInt("threads", cfg.Cpus);
        bool progress = !args.Has("no-progress");
        args.RejectUnknown();
        if (ops < 1) throw new CliException("--ops must be positive");
        if (threads < 1) throw new CliException("--threads must be positive");

        using var m = BootOptions.Boot(cfg);
        stdout.WriteLine($"kmem: booted {cfg.Profile.Name}, {m.TotalRamPages * 4 / 1024} MiB managed, {cfg.Cpus} CPUs, min_free_kbytes {m.Pages.MinFreeKbytes}");
        stdout.WriteLine();
        stdout.WriteLine("buddyinfo at boot:");
        stdout.Write(ProcViews.Buddyinfo(m));

        string? peak = null;
        var work = new PageWorkload { OperationsPerThread = ops, Seed = seed, AtPeak = () => peak = ProcViews.Buddyinfo(m) };
        var sw = Stopwatch.StartNew();
        var runner = new Thread(() => work.Run(m, threads)) { IsBackground = true };
        runner.Start();
        var bar = new ProgressBar(stdout, "page allocation workload", work.Total(threads), progress);
        while (!runner.Join(100)) bar.Update(work.Done);
        bar.Finish();
        sw.Stop();

        stdout.WriteLine();
        stdout.WriteLine($"buddyinfo at peak ({work.PeakLivePages} pages live):");
        stdout.Write(peak);
        stdout.WriteLine();
        stdout.WriteLine("buddyinfo after freeing everything:");
        stdout.Write(ProcViews.Buddyinfo(m));
        stdout.WriteLine();
        stdout.WriteLine($"{"GFP type",-30} {"allocations",12} {"failures",10} {"pages",12}");
        foreach (var (name, _, _) in PageWorkload.Types)
        {
            var t = work.Tally[name];
            stdout.WriteLine($"{name,-30} {t.Allocations,12} {t.Failures,10} {t.Pages,12}");
        }
        stdout.WriteLine();
        foreach (var z in m.Pages.Zones)
        {
            int largest = -1;
            for (int o = Zone.MaxOrder; o >= 0; o--) if (z.NrFree(o) > 0) { largest = o; break; }
            stdout.WriteLine($"zone {z.Name,-7} free {z.FreePages,8} of {z.ManagedPages,8} managed pages, largest free block order {largest} ({(largest < 0 ? 0 : 4 << largest)} kB)");
        }
        int vmallocRc = VmallocScenario.Run(m, stdout);
        string? broken = m.Pages.CheckInvariants();
        long leaked = m.TotalRamPages - m.FreePages;
        stdout.WriteLine();
        stdout.WriteLine($"{work.Total(threads)} operations in {sw.Elapsed.TotalSeconds:F2} s; free lists {(broken == null ? "consistent" : "BROKEN: " + broken)}; {leaked} pages not returned");
        bool slabOk = RunSlab(m, ops, seed, threads, progress, stdout);
        return broken == null && leaked == 0 && slabOk && vmallocRc == 0 ? 0 : 1;
    }

    /// <summary>The slab part: object caches with constructors and kmalloc traffic of the trace's sizes.</summary>
    private static bool RunSlab(Machine m, long ops, int seed, int threads, bool progress, TextWriter stdout)
    {
        stdout.WriteLine();
        string? peak = null;
        string? peakMeminfo = null;
        var work = new SlabWorkload
        {
            OperationsPerThread = ops, Seed = seed,
            AtPeak = () => { peak = ProcViews.Render(m, "slabinfo"); peakMeminfo = ProcViews.Meminfo(m); },
        };
        var sw = Stopwatch.StartNew();
        var runner = new Thread(() => work.Run(m, threads)) { IsBackground = true };
        runner.Start();
        var bar = new ProgressBar(stdout, "slab workload (dentry_like, inode_like, kmalloc)", work.Total(threads), progress);
        while (!runner.Join(100)) bar.Update(work.Done);
        bar.Finish();
        sw.Stop();
        static IEnumerable<string> Excerpt(string slabinfo) => slabinfo.Split('\n').Where((l, i) => i < 2 ||
            (l.Length > 0 && !l.StartsWith("dma-", StringComparison.Ordinal) && !l.StartsWith("kmalloc-rcl", StringComparison.Ordinal) &&
             !l.StartsWith("kmalloc-cg", StringComparison.Ordinal)));
        stdout.WriteLine();
        stdout.WriteLine("slabinfo at peak (excerpt):");
        foreach (var l in Excerpt(peak ?? "")) stdout.WriteLine(l);
        foreach (var l in (peakMeminfo ?? "").Split('\n').Where(l => l.StartsWith("Slab:") || l.StartsWith("SReclaimable:") || l.StartsWith("SUnreclaim:")))
            stdout.WriteLine(l);
        long live = m.Slab.Caches.Sum(c => c.LiveObjects);
        stdout.WriteLine();
        stdout.WriteLine($"constructor calls: dentry_like {work.DentryCtorCalls} ({work.Dentry!.NumSlabs} slabs now), inode_like {work.InodeCtorCalls}");
        m.Slab.DestroyCache(work.Dentry);
        m.Slab.DestroyCache(work.Inode);
        int shrunk = m.Slab.ShrinkAll();
        m.Pages.DrainAllPages();
        string? slabBroken = m.Slab.Caches.Select(c => c.CheckInvariants()).FirstOrDefault(e => e != null);
        long leaked = m.TotalRamPages - m.FreePages;
        stdout.WriteLine($"{work.Total(threads)} slab operations in {sw.Elapsed.TotalSeconds:F2} s; {work.Errors} pattern errors; {live} objects live at the end; " +
                         $"{shrunk} empty slabs shrunk; slab lists {(slabBroken == null ? "consistent" : "BROKEN: " + slabBroken)}; {leaked} pages not returned");
        return work.Errors == 0 && live == 0 && slabBroken == null && leaked == 0;
    }
}
