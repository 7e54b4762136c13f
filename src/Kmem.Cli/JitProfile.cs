using System.Buffers.Binary;
using System.Numerics;
using System.Runtime;
using Kmem;

namespace Kmem.Cli;

/// <summary>
/// Background JIT from a profile of the previous run of the same command (.NET's multicore JIT,
/// <see cref="ProfileOptimization"/>). kmem runs with tiered compilation off (Kmem.Cli.csproj), so every method is
/// compiled fully optimized on its first call, on the calling thread: a replay's first call into each slab, page and
/// vmalloc path stalled the replay thread for ~0.1 s in all, while the parse thread, its queue full, waited. With a
/// profile the runtime compiles the recorded methods on a background thread from process start, during argument
/// parsing, the sizing pass and boot, when the second core is mostly idle. A replay records its report in a second
/// profile (<see cref="NextPhase"/>): with one profile the background compiler was still busy ~0.2 s into the replay,
/// partly with report methods, taking a core from the parse thread.
/// </summary>
/// <remarks>
/// Profiles are ~15 KB per command and build in <c>$XDG_CACHE_HOME/kmem</c> (else <c>~/.cache/kmem</c>), written by
/// the runtime at exit; <c>KMEM_JIT_CACHE=DIR</c> puts them elsewhere, <c>KMEM_JIT_CACHE=off</c> turns this off.
/// Best effort: a cache that cannot be created means no profile, never an error. Not used by <c>kmem bench</c>, whose
/// timed rounds a background compile would disturb.
/// </remarks>
public static class JitProfile
{
    /// <summary>Starts background JIT for <paramref name="command"/> (the first argument), recording this run for the next.</summary>
    public static void Start(string? command)
    {
        if (command is null || command.StartsWith('-') || command is "help" or "bench" || !Program.Commands.ContainsKey(command))
            return;
        string? dir = Directory(Environment.GetEnvironmentVariable("KMEM_JIT_CACHE"),
            Environment.GetEnvironmentVariable("XDG_CACHE_HOME"), Environment.GetEnvironmentVariable("HOME"));
        if (dir is null)
            return;
        try
        {
            System.IO.Directory.CreateDirectory(dir);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return;
        }
        string name = FileName(command, typeof(Machine).Assembly.ManifestModule.ModuleVersionId,
            typeof(JitProfile).Assembly.ManifestModule.ModuleVersionId);
        Prune(dir, command, name);
        ProfileOptimization.SetProfileRoot(dir);
        ProfileOptimization.StartProfile(name);
        s_name = name;
    }

    private static string? s_name;

    /// <summary>
    /// Ends the profile of the command's timed part and starts one for what follows (<paramref name="phase"/>), so the
    /// background compiler does not spend the timed part on methods only the rest needs (a replay's report).
    /// </summary>
    public static void NextPhase(string phase)
    {
        if (s_name is not null)
            ProfileOptimization.StartProfile(s_name.Replace(".jitprofile", $".{phase}.jitprofile", StringComparison.Ordinal));
    }

    /// <summary>
    /// One profile per command and build (the module version ids of Kmem.dll and Kmem.Cli.dll): two builds run in
    /// turn (an A/B benchmark, two worktrees) would otherwise each find the other's profile, which the runtime
    /// ignores, and rewrite it, so neither would ever get background compilation.
    /// </summary>
    public static string FileName(string command, Guid library, Guid cli)
    {
        // Deterministic builds derive the ids from the assemblies' contents, so any 32 bits of them tell builds apart.
        uint id = BinaryPrimitives.ReadUInt32LittleEndian(library.ToByteArray())
            ^ BitOperations.RotateLeft(BinaryPrimitives.ReadUInt32LittleEndian(cli.ToByteArray()), 16);
        return $"{command}-{id:x8}.jitprofile";
    }

    // Profiles of other builds of the command, unused for a week, go: each rebuild leaves one behind.
    private static void Prune(string dir, string command, string keep)
    {
        try
        {
            foreach (string f in System.IO.Directory.EnumerateFiles(dir, $"{command}-*.jitprofile"))
            {
                if (Path.GetFileName(f) != keep && File.GetLastWriteTimeUtc(f) < DateTime.UtcNow.AddDays(-7))
                    File.Delete(f);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
        }
    }

    /// <summary>
    /// Waits (at most <paramref name="max"/>) until the background compiler has been idle for 50 ms (one large method
    /// takes ~10-20 ms to compile, so a shorter pause is no sign of the end):
    /// the compiled-method count stops moving. Called before a timed phase (a replay's event loop), whose threads
    /// would otherwise share the two cores with it: on the shorter trace (fs, 0.4 M events) its sizing pass ended
    /// before the profile was compiled, and 80-170 ms of compiling ran inside the ~0.3 s replay. Returns the time
    /// waited. Without a profile there is nothing to wait for (methods compile on first call, on the caller).
    /// </summary>
    public static TimeSpan WaitForBackgroundCompile(TimeSpan max)
    {
        if (s_name is null)
            return TimeSpan.Zero;
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        long last = System.Runtime.JitInfo.GetCompiledMethodCount(currentThread: false);
        int quiet = 0;
        while (System.Diagnostics.Stopwatch.GetElapsedTime(start) < max && quiet < 10)
        {
            Thread.Sleep(5);
            long now = System.Runtime.JitInfo.GetCompiledMethodCount(currentThread: false);
            quiet = now == last ? quiet + 1 : 0;
            last = now;
        }
        return System.Diagnostics.Stopwatch.GetElapsedTime(start);
    }

    /// <summary>Where profiles go for these environment values; null for none.</summary>
    public static string? Directory(string? setting, string? xdgCacheHome, string? home)
    {
        if (setting is "off" or "0" or "false")
            return null;
        if (!string.IsNullOrEmpty(setting))
            return setting;
        if (!string.IsNullOrEmpty(xdgCacheHome) && Path.IsPathRooted(xdgCacheHome)) // the XDG spec ignores relative paths
            return Path.Combine(xdgCacheHome, "kmem");
        return string.IsNullOrEmpty(home) ? null : Path.Combine(home, ".cache", "kmem");
    }
}
