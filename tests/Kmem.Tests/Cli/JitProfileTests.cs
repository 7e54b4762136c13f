using System.Diagnostics;
using Kmem.Cli;

namespace Kmem.Tests.Cli;

/// <summary>Where the CLI keeps its multicore-JIT profiles, and that a real run writes one (or none when off).</summary>
public class JitProfileTests
{
    [Theory]
    [InlineData(null, "/xdg", "/home/u", "/xdg/kmem")]
    [InlineData(null, null, "/home/u", "/home/u/.cache/kmem")]
    [InlineData(null, "relative/cache", "/home/u", "/home/u/.cache/kmem")] // XDG: relative paths are ignored
    [InlineData("", "", "/home/u", "/home/u/.cache/kmem")]
    [InlineData("/elsewhere", "/xdg", "/home/u", "/elsewhere")]
    [InlineData("off", "/xdg", "/home/u", null)]
    [InlineData("0", "/xdg", "/home/u", null)]
    [InlineData(null, null, null, null)]
    public void Directory_follows_KMEM_JIT_CACHE_then_XDG_then_HOME(string? setting, string? xdg, string? home, string? expected) =>
        Assert.Equal(expected, JitProfile.Directory(setting, xdg, home));

    [Fact]
    public void Each_build_has_its_own_profile()
    {
        Guid a = Guid.NewGuid(), b = Guid.NewGuid();
        Assert.Matches(@"^replay-[0-9a-f]{8}\.jitprofile$", JitProfile.FileName("replay", a, b));
        Assert.Equal(JitProfile.FileName("replay", a, b), JitProfile.FileName("replay", a, b));
        Assert.NotEqual(JitProfile.FileName("replay", a, b), JitProfile.FileName("replay", Guid.NewGuid(), b));
        Assert.NotEqual(JitProfile.FileName("replay", a, b), JitProfile.FileName("replay", a, Guid.NewGuid()));
    }

    [Fact]
    public void A_replay_keeps_its_report_in_a_second_profile()
    {
        string dir = Directory.CreateTempSubdirectory("kmem-jit-").FullName;
        try
        {
            string trace = Path.Combine(dir, "t.trace");
            File.WriteAllText(trace, string.Concat(Enumerable.Repeat(
                " capture-kmem-tr-4902    [000] .....  5860.231532: kmalloc: call_site=alloc_fdtable+0x55/0x140 ptr=00000000d7d61d6a bytes_req=56 bytes_alloc=64 gfp_flags=GFP_KERNEL_ACCOUNT node=-1 accounted=true\n", 3)));
            string cache = Path.Combine(dir, "cache");
            var (rc, stdout) = RunCli(["replay", trace, "--json", "--ram", "256M"], cache, dir);
            Assert.Equal(0, rc);
            Assert.Contains("\"events\": 3", stdout);
            Assert.Contains("\"compile_seconds\": ", stdout);
            string[] names = Directory.GetFiles(cache).Select(f => Path.GetFileName(f)!).Order().ToArray();
            Assert.Equal(2, names.Length);
            Assert.Matches(@"^replay-[0-9a-f]{8}\.jitprofile$", names[0]);
            Assert.Equal(names[0].Replace(".jitprofile", ".report.jitprofile"), names[1]);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static (int ExitCode, string Stdout) RunCli(string[] args, string cache, string home)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "Kmem.Cli.dll"));
        foreach (string a in args)
            psi.ArgumentList.Add(a);
        psi.Environment["KMEM_JIT_CACHE"] = cache;
        psi.Environment["HOME"] = home;
        psi.Environment.Remove("XDG_CACHE_HOME");
        using var p = Process.Start(psi)!;
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout);
    }

    [Theory]
    [InlineData("proc buddyinfo --ram 64M", true, @"^proc-[0-9a-f]{8}\.jitprofile$")]
    [InlineData("proc buddyinfo --ram 64M", false, null)]
    public void A_run_of_the_cli_leaves_a_profile_unless_off(string command, bool on, string? file)
    {
        string dir = Directory.CreateTempSubdirectory("kmem-jit-").FullName;
        try
        {
            var (rc, stdout) = RunCli(command.Split(' '), on ? dir : "off", dir); // were "off" ignored, a profile would land under HOME
            Assert.Equal(0, rc);
            Assert.StartsWith("Node 0, zone", stdout);
            string[] written = Directory.GetFiles(dir, "*", SearchOption.AllDirectories);
            if (file is null)
                Assert.Empty(written);
            else
                Assert.Matches(file, Path.GetFileName(Assert.Single(written)));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    // In this process no profile was started: there is no background compiler to wait for.
    [Fact]
    public void Without_a_profile_nothing_is_waited_for() =>
        Assert.Equal(TimeSpan.Zero, JitProfile.WaitForBackgroundCompile(TimeSpan.FromSeconds(5)));
}
