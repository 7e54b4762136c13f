using System.Diagnostics;
using Kmem.Cli;
using Kmem.Cli.Commands;
using Kmem.Tracing;

namespace Kmem.Tests.Tracing;

/// <summary>A fact that runs only where a real capture can: Linux, root, and tracefs mounted or mountable.</summary>
public sealed class TracefsFactAttribute : FactAttribute
{
    public TracefsFactAttribute()
    {
        string? why = WhyNot();
        if (why != null) Skip = why;
    }

    private static string? WhyNot()
    {
        if (!OperatingSystem.IsLinux()) return "not Linux";
        if (!TraceCapture.IsRoot()) return "not root";
        string root = TraceCapture.DefaultTracingRoot;
        if (Directory.Exists(Path.Combine(root, "events", "kmem"))) return null;
        if (!Directory.Exists(root)) return $"no {root}";
        // Mountable? Try on a scratch directory, and undo.
        string dir = Directory.CreateTempSubdirectory("kmem-tracefs-probe").FullName;
        try
        {
            if (Run("mount", "-t", "tracefs", "nodev", dir) != 0) return "tracefs cannot be mounted here";
            bool kmem = Directory.Exists(Path.Combine(dir, "events", "kmem"));
            Run("umount", dir);
            return kmem ? null : "tracefs has no events/kmem";
        }
        finally
        {
            try { Directory.Delete(dir); } catch (IOException) { }
        }
    }

    private static int Run(string tool, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(tool) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (string a in args) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            p.StandardError.ReadToEnd();
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return -1;
        }
    }
}

public sealed class TraceCaptureTests
{
    private static string Error(Action a) => Assert.Throws<CliException>(a).Message;

    [Fact]
    public void Error_paths_are_one_clear_line()
    {
        var w = new StringWriter();
        string tmp = Path.Combine(Path.GetTempPath(), "kmem-capture-test.trace");
        Assert.Contains("give the COMMAND", Error(() => TraceCapture.Run(tmp, [], w)));
        Assert.Contains("must run as root", Error(() => TraceCapture.Run(tmp, ["/bin/true"], w, isRoot: false)));
        Assert.Contains("command 'kmem-no-such-command-xyz' not found", Error(() => TraceCapture.Run(tmp, ["kmem-no-such-command-xyz"], w, isRoot: true)));
        Assert.Contains("tracefs is missing", Error(() => TraceCapture.Run(tmp, ["/bin/true"], w, tracingRoot: "/nonexistent/kmem/tracing", isRoot: true)));
        Assert.Contains("no such directory", Error(() => TraceCapture.Run("/nonexistent/dir/out.trace", ["/bin/true"], w, isRoot: true)));
        foreach (string m in new[] { "give the COMMAND", "must run as root" })
            Assert.DoesNotContain('\n', m);
        Assert.False(File.Exists(tmp));
        // Through the CLI's argument parsing: OUT is required and COMMAND comes after "--".
        Assert.Contains("exactly one OUT", Error(() => TraceCommand.Run(new CliArgs(["capture", "--", "/bin/true"]), w)));
        Assert.Contains("give the COMMAND", Error(() => TraceCommand.Run(new CliArgs(["capture", tmp]), w)));
    }

    [Fact]
    public void Commands_resolve_by_path_or_PATH()
    {
        Assert.Equal("/bin/sh", TraceCapture.ResolveCommand("/bin/sh"));
        Assert.NotNull(TraceCapture.ResolveCommand("sh"));
        Assert.Null(TraceCapture.ResolveCommand("/nonexistent/sh"));
        Assert.Null(TraceCapture.ResolveCommand(""));
    }

    // A real capture of /bin/true on this kernel: the file reads back with kmem events, and every setting is restored.
    [TracefsFact]
    public void Captures_a_real_trace_and_restores_the_settings()
    {
        string root = TraceCapture.DefaultTracingRoot;
        bool wasMounted = Directory.Exists(Path.Combine(root, "events", "kmem"));
        string? before = wasMounted ? Settings(root) : null;
        string path = Path.Combine(Path.GetTempPath(), $"kmem-capture-{Environment.ProcessId}-{Guid.NewGuid():N}.trace.zst");
        try
        {
            var w = new StringWriter();
            int rc = TraceCapture.Run(path, ["/bin/sh", "-c", "/bin/true; ls / > /dev/null"], w);
            Assert.Equal(0, rc);
            Assert.Contains("written to", w.ToString());
            using var r = new FtraceReader(path, FtraceReaderOptions.Lenient);
            Assert.Equal(TraceCompression.Zstd, r.Compression);
            long n = 0;
            while (r.TryRead(out _)) n++;
            Assert.True(n > 0, "no kmem events captured");
            Assert.Equal(0, r.Malformed);
            Assert.Equal(wasMounted, Directory.Exists(Path.Combine(root, "events", "kmem")));
            if (wasMounted) Assert.Equal(before, Settings(root));
        }
        finally
        {
            File.Delete(path);
        }
    }

    private static string Settings(string root) =>
        File.ReadAllText(Path.Combine(root, "tracing_on")).Trim() + " " + string.Join(",",
            new[] { "kmem", "vmalloc" }.Where(g => Directory.Exists(Path.Combine(root, "events", g)))
                .SelectMany(g => Directory.GetDirectories(Path.Combine(root, "events", g)).Order(StringComparer.Ordinal))
                .Select(d => File.ReadAllText(Path.Combine(d, "enable")).Trim()));
}
