using Kmem.Cli.Commands;

namespace Kmem.Cli;

/// <summary>
/// The <c>kmem</c> command. Each command lives in Commands/ and registers itself in <see cref="Commands"/>.
/// Errors in what the user typed print one line and exit 2; a kmem report (a bad free found by a workload) exits 1.
/// </summary>
public static class Program
{
    public static readonly Dictionary<string, (string Summary, Func<CliArgs, TextWriter, int> Run)> Commands = new(StringComparer.Ordinal)
    {
        ["run"] = ("run the main scenario on a booted machine (the default job)", RunCommand.Run),
        ["proc"] = ("print a /proc view: kmem proc NAME", ProcCommand.Run),
        ["slab"] = ("slab geometry for object sizes, slabinfo: kmem slab geometry --size N[,N...]", SlabCommand.Run),
        ["replay"] = ("replay a Linux kmem trace through kmem: kmem replay TRACE", ReplayCommand.Run),
        ["trace"] = ("trace tools: kmem trace stat TRACE (perf kmem stat)", TraceCommand.Run),
        ["bench"] = ("quick benchmark of the fast paths against malloc (--json for machines)", BenchCommand.Run),
    };

    public static int Main(string[] args)
    {
        JitProfile.Start(args.Length > 0 ? args[0] : null);
        return Execute(args, Console.Out, Console.Error);
    }

    public static int Execute(string[] args, TextWriter stdout, TextWriter stderr)
    {
        try
        {
            if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
            {
                PrintUsage(stdout);
                return args.Length == 0 ? 2 : 0;
            }
            if (!Commands.TryGetValue(args[0], out var cmd))
                throw new CliException($"unknown command '{args[0]}' (try: {string.Join(", ", Commands.Keys.Order())})");
            var cli = new CliArgs(args.Skip(1));
            return cmd.Run(cli, stdout);
        }
        catch (CliException e)
        {
            stderr.WriteLine($"kmem: {e.Message}");
            return 2;
        }
        catch (KmemException e)
        {
            stderr.WriteLine($"kmem: {e.Message}");
            return 1;
        }
        catch (IOException e)
        {
            stderr.WriteLine($"kmem: {e.Message}");
            return 1;
        }
        catch (UnauthorizedAccessException e)
        {
            stderr.WriteLine($"kmem: {e.Message}");
            return 1;
        }
    }

    private static void PrintUsage(TextWriter w)
    {
        w.WriteLine("kmem: the Linux kernel's memory allocators, running for real.");
        w.WriteLine();
        w.WriteLine("usage: kmem COMMAND [options]");
        foreach (var (name, (summary, _)) in Commands.OrderBy(k => k.Key, StringComparer.Ordinal))
            w.WriteLine($"  {name,-10} {summary}");
        w.WriteLine();
        w.WriteLine(BootOptions.Help);
    }
}
