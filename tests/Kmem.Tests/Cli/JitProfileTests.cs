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

    [Theory]
    [InlineData("proc buddyinfo --ram 64M", true, @"^proc-[0-9a-f]{8}\.jitprofile$")]
    [InlineData("proc buddyinfo --ram 64M", false, null)]
    public void A_run_of_the_cli_leaves_a_profile_unless_off(string command, bool on, string? file)
    {
        string dir = Directory.CreateTempSubdirectory("kmem-jit-").FullName;
        try
        {
            string cli = Path.Combine(AppContext.BaseDirectory, "Kmem.Cli.dll");
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
            psi.ArgumentList.Add(cli);
            foreach (string a in command.Split(' '))
                psi.ArgumentList.Add(a);
            psi.Environment["KMEM_JIT_CACHE"] = on ? dir : "off";
            psi.Environment["HOME"] = dir; // were "off" ignored, the profile would land under here
            psi.Environment.Remove("XDG_CACHE_HOME");
            using var p = Process.Start(psi)!;
            string stdout = p.StandardOutput.ReadToEnd();
            p.WaitForExit();
            Assert.Equal(0, p.ExitCode);
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
}
