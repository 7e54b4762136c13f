using Kmem.Proc;

namespace Kmem.Cli.Commands;

/// <summary><c>kmem proc NAME</c>: boot a machine and print one of its /proc views.</summary>
public static class ProcCommand
{
    public static int Run(CliArgs args, TextWriter stdout)
    {
        if (args.Has("help") || args.Positional.Count != 1)
        {
            stdout.WriteLine($"usage: kmem proc NAME [boot options]\n  NAME: {string.Join(", ", ProcViews.Names)}\n{BootOptions.Help}");
            return args.Has("help") ? 0 : 2;
        }
        string name = args.Positional[0];
        var cfg = BootOptions.Parse(args);
        args.RejectUnknown();
        if (!ProcViews.Names.Contains(name))
            throw new CliException($"no such view '{name}' (have: {string.Join(", ", ProcViews.Names)})");
        using var machine = BootOptions.Boot(cfg);
        stdout.Write(ProcViews.Render(machine, name));
        return 0;
    }
}
