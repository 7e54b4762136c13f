using Kmem.Tracing;

namespace Kmem.Cli.Commands;

/// <summary>
/// <c>kmem trace SUBCOMMAND</c>: work on ftrace kmem traces without a machine.
/// <list type="bullet">
/// <item><c>kmem trace stat TRACE [--json] [--strict] [--top N]</c>: what <c>perf kmem stat</c> shows
/// (<see cref="TraceStatistics"/>). Lenient by default: malformed lines are counted and the first few printed to
/// the report; <c>--strict</c> stops at the first one with file:line.</item>
/// <item><c>kmem trace capture OUT -- COMMAND [ARGS…]</c>: a real Linux trace of COMMAND, as root
/// (<see cref="TraceCapture"/>).</item>
/// </list>
/// </summary>
public static class TraceCommand
{
    private const string Usage =
        "usage: kmem trace stat TRACE [--json] [--strict] [--top N]\n" +
        "       kmem trace capture OUT -- COMMAND [ARGS...]   (Linux, root: kmem/* and vmalloc/* events of the whole system while COMMAND runs)\n" +
        "  TRACE: ftrace text (trace_pipe output), plain, .gz or .zst; OUT: the same, compression by extension";

    public static int Run(CliArgs args, TextWriter stdout)
    {
        if (args.Positional.Count == 0)
        {
            stdout.WriteLine(Usage);
            return args.Has("help") ? 0 : 2;
        }
        string sub = args.Positional[0];
        return sub switch
        {
            "stat" => Stat(args, stdout),
            "capture" => Capture(args, stdout),
            _ => throw new CliException($"unknown trace subcommand '{sub}' (try: stat, capture)"),
        };
    }

    private static int Capture(CliArgs args, TextWriter stdout)
    {
        if (args.Has("help"))
        {
            stdout.WriteLine(Usage);
            return 0;
        }
        args.RejectUnknown();
        if (args.Positional.Count != 2) throw new CliException("trace capture: give exactly one OUT file, then -- COMMAND");
        return TraceCapture.Run(args.Positional[1], args.Rest, stdout);
    }

    private static int Stat(CliArgs args, TextWriter stdout)
    {
        if (args.Has("help"))
        {
            stdout.WriteLine(Usage);
            return 0;
        }
        if (args.Positional.Count != 2)
            throw new CliException("trace stat: give exactly one TRACE file");
        bool json = args.Has("json");
        bool strict = args.Has("strict");
        int top = args.GetInt("top", 10);
        args.RejectUnknown();
        if (top < 1) throw new CliException("--top must be positive");
        string path = args.Positional[1];
        if (!File.Exists(path)) throw new CliException($"trace stat: no such file '{path}'");

        var options = strict ? FtraceReaderOptions.StrictMode : FtraceReaderOptions.Lenient;
        using var reader = new FtraceReader(path, options);
        var stats = TraceStatistics.From(reader);

        if (json)
        {
            stdout.WriteLine(stats.ToJson(top));
            return 0;
        }
        stdout.WriteLine($"kmem trace stat: {Path.GetFileName(path)} ({reader.Compression.ToString().ToLowerInvariant()})");
        stdout.WriteLine();
        stdout.Write(stats.ToText(top));
        if (reader.MalformedSamples.Count > 0)
        {
            stdout.WriteLine();
            stdout.WriteLine($"MALFORMED LINES (first {reader.MalformedSamples.Count} of {reader.Malformed})");
            foreach (MalformedLine m in reader.MalformedSamples)
                stdout.WriteLine($"  {m}");
        }
        return 0;
    }
}
