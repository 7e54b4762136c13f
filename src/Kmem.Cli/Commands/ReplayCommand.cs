using Kmem.Replay;
using Kmem.Tracing;

namespace Kmem.Cli.Commands;

/// <summary>
/// <c>kmem replay TRACE [--json] [--strict] [--mode objects|pages|all] [--max-events N] [--top N] [boot options]</c>:
/// boot a machine (sized from the trace unless --ram or --zones is given), drive it with the trace's events and
/// print the <see cref="ReplayReport"/>. Exit 0 when the replay had no allocator errors, 1 otherwise.
/// </summary>
public static class ReplayCommand
{
    private const string Usage =
        "usage: kmem replay TRACE [--json] [--strict] [--mode objects|pages|all] [--max-events N] [--top N] [boot options]\n" +
        "  objects (default): slab, kmalloc and vmalloc events, and the page events that are not slab pages\n" +
        "  pages: page events only; all: every event (slab memory counted twice)\n" +
        "  without --ram/--zones the machine is sized from the trace's peak live memory";

    /// <summary>Builds the object allocators of a booted machine; null when the machine has none (page-only replay).</summary>
    public static Func<Machine, IReplayObjects?> ObjectsFor { get; set; } = m => new MachineObjects(m);

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
        // Before the reader exists: its read-ahead thread would otherwise decompress chunks ahead during the wait,
        // outside the replay's clock.
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
