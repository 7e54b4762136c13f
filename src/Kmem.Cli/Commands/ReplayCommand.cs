using Kmem.Replay;
using Kmem.Tracing;

namespace Kmem.Cli.Commands;

/// <summary>
/// <c>kmem replay TRACE [--json] [--strict] [--mode objects|pages|all] [--max-events N] [--top N] [--no-warmup] [boot options]</c>:
/// boot a machine (sized from the trace unless --ram or --zones is given), drive it with the trace's events and
/// print the <see cref="ReplayReport"/>. Exit 0 when the replay had no allocator errors, 1 otherwise.
/// </summary>
/// <remarks>
/// The replay's clock measures replaying, not start-up: before it starts, the trace's first <see cref="WarmUpEvents"/>
/// events are replayed on a small scratch machine, so that the replay paths are compiled (tiered compilation is off:
/// each method is compiled fully on its first call, ~0.2 s for a replay's paths, which the first run of a build,
/// without a saved JIT profile, spent inside the clock), and the background compiler fed by the profile has settled.
/// <c>--no-warmup</c> skips the scratch replay; the report's compile time says what compiling the clock still saw.
/// </remarks>
public static class ReplayCommand
{
    private const string Usage =
        "usage: kmem replay TRACE [--json] [--strict] [--mode objects|pages|all] [--max-events N] [--top N] [--no-warmup] [boot options]\n" +
        "  objects (default): slab, kmalloc and vmalloc events, and the page events that are not slab pages\n" +
        "  pages: page events only; all: every event (slab memory counted twice)\n" +
        "  without --ram/--zones the machine is sized from the trace's peak live memory\n" +
        "  --no-warmup: do not compile the replay paths on a scratch machine before the clock starts";

    /// <summary>Events the warm-up replays on its scratch machine (a few ms of replay; enough to reach every common path).</summary>
    public const int WarmUpEvents = 20_000;

    /// <summary>Builds the object allocators of a booted machine; null when the machine has none (page-only replay).</summary>
    public static Func<Machine, IReplayObjects?> ObjectsFor { get; set; } = m => new MachineObjects(m);

    // The trace's first events through a scratch machine of the same profile and CPUs; failures there do not matter.
    private static void WarmUp(string path, FtraceReaderOptions readerOptions, ReplayMode mode, MachineConfig cfg)
    {
        using Machine scratch = BootOptions.Boot(new MachineConfig
        {
            Profile = cfg.Profile, Cpus = cfg.Cpus, RamBytes = 256L << 20, ForceNoMemfd = cfg.ForceNoMemfd,
        });
        using var engine = new ReplayEngine(scratch, ObjectsFor(scratch), new ReplayOptions { Mode = mode, MaxEvents = WarmUpEvents });
        using (var reader = new FtraceReader(path, readerOptions with { Strict = false }))
            engine.Run(reader);
        engine.FreeAllLive();
    }

    public static int Run(CliArgs args, TextWriter stdout)
    {
        if (args.Has("help"))
        {
            stdout.WriteLine($"{Usage}\n{BootOptions.Help}");
            return 0;
        }
        if (args.Positional.Count != 1) throw new CliException("replay: give exactly one TRACE file\n" + Usage);
        string path = args.Positional[0];
        bool json = args.Has("json");
        bool strict = args.Has("strict");
        string modeText = args.Get("mode") ?? "objects";
        long maxEvents = args.GetLong("max-events", 0);
        int top = args.GetInt("top", 10);
        bool sized = args.Get("ram") is null && args.Get("zones") is null;
        bool warmUp = !args.Has("no-warmup");
        var cfg = BootOptions.Parse(args);
        args.RejectUnknown();
        ReplayMode mode = modeText switch
        {
            "objects" => ReplayMode.Objects,
            "pages" => ReplayMode.Pages,
            "all" => ReplayMode.All,
            _ => throw new CliException($"--mode: '{modeText}' is not objects, pages or all"),
        };
        if (maxEvents < 0) throw new CliException("--max-events must not be negative");
        if (top < 1) throw new CliException("--top must be positive");
        if (!File.Exists(path)) throw new CliException($"replay: no such file '{path}'");

        var readerOptions = strict ? FtraceReaderOptions.StrictMode : FtraceReaderOptions.Lenient;
        if (sized)
            cfg = cfg with { RamBytes = ReplaySizing.RamFor(ReplaySizing.PeakLiveBytes(path, mode, readerOptions)) };

        using Machine m = BootOptions.Boot(cfg);
        IReplayObjects? objects = ObjectsFor(m);
        using var engine = new ReplayEngine(m, objects, new ReplayOptions { Mode = mode, MaxEvents = maxEvents, Top = top });
        ReplayReport report;
        // Start-up before the clock (see the remarks), and before the replay's reader exists: its read-ahead thread
        // would otherwise decompress chunks ahead meanwhile, outside the clock.
        if (warmUp)
            WarmUp(path, readerOptions, mode, cfg);
        JitProfile.WaitForBackgroundCompile(TimeSpan.FromSeconds(1));
        using (var reader = new FtraceReader(path, readerOptions))
        {
            engine.Run(reader);
            JitProfile.NextPhase("report");
            report = ReplayReport.Capture(engine, Path.GetFileName(path), reader);
        }
        engine.FreeAllLive();
        if (json)
            stdout.WriteLine(report.ToJson());
        else
        {
            if (objects == null && mode != ReplayMode.Pages)
                stdout.WriteLine("note: this build has no slab allocator on the machine; object events were skipped\n");
            stdout.Write(report.ToText());
        }
        return report.AllocatorErrors == 0 ? 0 : 1;
    }
}
