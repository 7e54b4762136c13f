using System.Diagnostics;
using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;

namespace Kmem.Cli.Commands;

/// <summary>
/// <c>kmem trace capture OUT -- COMMAND [ARGS…]</c>: record a real Linux kmem trace of COMMAND, as ../shared/traces
/// were captured.
/// <list type="number">
/// <item>Checks: Linux, root (euid 0), COMMAND found (a path, or a name on PATH), tracefs at
/// /sys/kernel/tracing with events/kmem (mounted with <c>mount -t tracefs nodev /sys/kernel/tracing</c> when the
/// directory is empty, and unmounted again at the end). Each failure is one clear line, before anything changes.</item>
/// <item>Saves tracing_on and the enable file of every kmem/* and vmalloc/* event; clears the ring buffer (as
/// trace-cmd does, so older events do not leak in); enables the two groups and tracing_on.</item>
/// <item>A thread streams trace_pipe into OUT (plain, or .zst/.gz by extension) while COMMAND runs with this
/// terminal's stdio. trace_pipe blocks while empty, so the end is a marker: after COMMAND exits, the events are
/// disabled, a line is written to trace_marker, and the stream stops when the marker comes through (it is not
/// copied; a 5 s timeout guards a marker that never comes).</item>
/// <item>Restores every saved enable, tracing_on and the mount, whatever happened. Exit code: COMMAND's.</item>
/// </list>
/// The trace is system-wide, as ftrace's is: other tasks' events are in it too (filter by comm or pid).
/// </summary>
public static class TraceCapture
{
    /// <summary>The default tracefs mount point.</summary>
    public const string DefaultTracingRoot = "/sys/kernel/tracing";

    private const string Marker = "kmem-trace-capture-end";

    [DllImport("libc", EntryPoint = "geteuid")]
    private static extern uint GetEuid();

    /// <summary>Is the process running as root (euid 0)? False off Linux.</summary>
    public static bool IsRoot()
    {
        if (!OperatingSystem.IsLinux()) return false;
        try { return GetEuid() == 0; }
        catch (DllNotFoundException) { return false; }
    }

    /// <summary>Runs a capture. Throws <see cref="CliException"/> (one line) when it cannot start.</summary>
    /// <param name="outPath">The trace file to write.</param>
    /// <param name="command">COMMAND and its arguments.</param>
    /// <param name="stdout">Where the summary goes.</param>
    /// <param name="tracingRoot">The tracefs mount point (tests point it elsewhere).</param>
    /// <param name="isRoot">Overrides the root check (tests).</param>
    public static int Run(string outPath, IReadOnlyList<string> command, TextWriter stdout, string tracingRoot = DefaultTracingRoot, bool? isRoot = null)
    {
        ArgumentNullException.ThrowIfNull(outPath);
        ArgumentNullException.ThrowIfNull(command);
        if (command.Count == 0) throw new CliException("trace capture: give the COMMAND to run after --, e.g. kmem trace capture out.trace.zst -- /bin/true");
        if (!OperatingSystem.IsLinux()) throw new CliException("trace capture: needs Linux (ftrace's tracefs)");
        if (!(isRoot ?? IsRoot())) throw new CliException("trace capture: must run as root (tracefs event controls are root-only); try sudo");
        string exe = ResolveCommand(command[0]) ?? throw new CliException($"trace capture: command '{command[0]}' not found");
        string? outDir = Path.GetDirectoryName(Path.GetFullPath(outPath));
        if (outDir != null && !Directory.Exists(outDir)) throw new CliException($"trace capture: no such directory '{outDir}' for OUT");

        bool mounted = EnsureTracefs(tracingRoot);
        try
        {
            string[] groups = ["kmem", "vmalloc"];
            var enables = new List<(string File, string Value)>();
            foreach (string g in groups)
            {
                string dir = Path.Combine(tracingRoot, "events", g);
                if (!Directory.Exists(dir)) continue;
                foreach (string ev in Directory.GetDirectories(dir).Order(StringComparer.Ordinal))
                {
                    string f = Path.Combine(ev, "enable");
                    if (File.Exists(f)) enables.Add((f, File.ReadAllText(f).Trim()));
                }
            }
            string tracingOn = Path.Combine(tracingRoot, "tracing_on");
            string savedOn = File.ReadAllText(tracingOn).Trim();
            try
            {
                return Capture(outPath, exe, command, stdout, tracingRoot, groups);
            }
            finally
            {
                foreach (string g in groups)
                {
                    string f = Path.Combine(tracingRoot, "events", g, "enable");
                    if (File.Exists(f)) TryWrite(f, "0");
                }
                foreach (var (f, v) in enables) TryWrite(f, v == "1" ? "1" : "0");
                TryWrite(tracingOn, savedOn == "0" ? "0" : "1");
            }
        }
        finally
        {
            if (mounted) RunTool("umount", tracingRoot);
        }
    }

    private static int Capture(string outPath, string exe, IReadOnlyList<string> command, TextWriter stdout, string root, string[] groups)
    {
        File.WriteAllText(Path.Combine(root, "trace"), ""); // clear the ring buffer
        foreach (string g in groups)
        {
            string f = Path.Combine(root, "events", g, "enable");
            if (File.Exists(f)) File.WriteAllText(f, "1");
        }
        File.WriteAllText(Path.Combine(root, "tracing_on"), "1");

        long lines = 0, events = 0;
        Exception? streamError = null;
        using var pipe = new FileStream(Path.Combine(root, "trace_pipe"), FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
        using var file = File.Create(outPath);
        string ext = Path.GetExtension(outPath);
        Stream output = ext.Equals(".zst", StringComparison.OrdinalIgnoreCase) || ext.Equals(".zstd", StringComparison.OrdinalIgnoreCase)
            ? new ZstdSharp.CompressionStream(file, 3)
            : ext.Equals(".gz", StringComparison.OrdinalIgnoreCase) ? new GZipStream(file, CompressionLevel.Fastest) : file;
        var streamer = new Thread(() =>
        {
            try
            {
                using var reader = new StreamReader(pipe, Encoding.UTF8, false, 1 << 16, leaveOpen: true);
                using var writer = new StreamWriter(output, new UTF8Encoding(false), 1 << 16, leaveOpen: true) { NewLine = "\n" };
                while (reader.ReadLine() is { } line)
                {
                    if (line.Contains(Marker, StringComparison.Ordinal)) break;
                    writer.WriteLine(line);
                    lines++;
                    if (line.Contains(" kmem:", StringComparison.Ordinal) || line.Contains(": kmalloc:", StringComparison.Ordinal) ||
                        line.Contains(": kfree:", StringComparison.Ordinal) || line.Contains(": kmem_cache_", StringComparison.Ordinal) ||
                        line.Contains(": mm_page_", StringComparison.Ordinal) || line.Contains("vmap_area", StringComparison.Ordinal))
                        events++;
                }
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException)
            {
                streamError = e;
            }
        }) { IsBackground = true, Name = "kmem trace capture" };
        streamer.Start();

        int exitCode;
        var psi = new ProcessStartInfo(exe) { UseShellExecute = false };
        foreach (string a in command.Skip(1)) psi.ArgumentList.Add(a);
        using (var p = Process.Start(psi) ?? throw new CliException($"trace capture: could not start '{command[0]}'"))
        {
            p.WaitForExit();
            exitCode = p.ExitCode;
        }
        foreach (string g in groups)
        {
            string f = Path.Combine(root, "events", g, "enable");
            if (File.Exists(f)) File.WriteAllText(f, "0");
        }
        File.WriteAllText(Path.Combine(root, "trace_marker"), Marker + "\n");
        bool ended = streamer.Join(TimeSpan.FromSeconds(5));
        if (ended && !ReferenceEquals(output, file)) output.Dispose();
        else if (ended) output.Flush();
        stdout.WriteLine(ended
            ? $"kmem trace capture: {lines:N0} lines ({events:N0} kmem/vmalloc events) of '{string.Join(' ', command)}' (exit {exitCode}) written to {outPath}"
            : $"kmem trace capture: the end marker did not come through trace_pipe within 5 s; {outPath} may be incomplete ({lines:N0} lines)");
        if (streamError != null) stdout.WriteLine($"kmem trace capture: reading trace_pipe failed: {streamError.Message}");
        return exitCode;
    }

    /// <summary>
    /// Makes sure tracefs is at <paramref name="root"/> with events/kmem; mounts it when the directory exists but is
    /// empty. Returns true when it mounted (the caller unmounts). One-line errors otherwise.
    /// </summary>
    private static bool EnsureTracefs(string root)
    {
        if (Directory.Exists(Path.Combine(root, "events", "kmem"))) return false;
        if (!Directory.Exists(root))
            throw new CliException($"trace capture: tracefs is missing: no directory {root} (is this a Linux kernel with CONFIG_FTRACE?)");
        if (File.Exists(Path.Combine(root, "trace_pipe")))
            throw new CliException($"trace capture: tracefs at {root} has no events/kmem (kernel built without the kmem tracepoints?)");
        string? err = RunTool("mount", "-t", "tracefs", "nodev", root);
        if (err != null) throw new CliException($"trace capture: tracefs is missing at {root} and mounting it failed: {err}");
        if (!Directory.Exists(Path.Combine(root, "events", "kmem")))
        {
            RunTool("umount", root);
            throw new CliException($"trace capture: tracefs mounted at {root} has no events/kmem");
        }
        return true;
    }

    // Runs a system tool; null on success, its first error line otherwise.
    private static string? RunTool(string tool, params string[] args)
    {
        try
        {
            var psi = new ProcessStartInfo(tool) { UseShellExecute = false, RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (string a in args) psi.ArgumentList.Add(a);
            using var p = Process.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            return p.ExitCode == 0 ? null : (err.Split('\n', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? $"{tool} exited {p.ExitCode}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            return $"{tool}: {e.Message}";
        }
    }

    private static void TryWrite(string file, string value)
    {
        try { File.WriteAllText(file, value); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>The executable for <paramref name="name"/>: a path (with '/') if it exists, else the first match on PATH.</summary>
    public static string? ResolveCommand(string name)
    {
        if (string.IsNullOrEmpty(name)) return null;
        if (name.Contains('/')) return File.Exists(name) ? name : null;
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string p = Path.Combine(dir, name);
            if (File.Exists(p)) return p;
        }
        return null;
    }
}
