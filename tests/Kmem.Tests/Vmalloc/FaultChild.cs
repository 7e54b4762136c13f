using System.Diagnostics;
using Kmem;

/// <summary>
/// A .NET startup hook (DOTNET_STARTUP_HOOKS) that turns any dotnet process into a one-shot fault probe: it boots a
/// machine, vmallocs a page and touches what <c>KMEM_FAULT_MODE</c> names, before the host program's Main runs.
/// "guard": the guard page after the area; "stale": the area after vfree; "control": the last valid byte, then exit 42.
/// Tests run it on the built Kmem.Cli.dll and check how the child died.
/// </summary>
internal static class StartupHook
{
    // Touch through libc so the fault happens in native code: the runtime then lets SIGSEGV kill the process
    // (a fault in managed code would be turned into a fatal AccessViolationException and SIGABRT instead).
    [System.Runtime.InteropServices.DllImport("libc")]
    private static extern nint memset(nint dst, int c, nuint n);

    public static unsafe void Initialize()
    {
        string? mode = Environment.GetEnvironmentVariable("KMEM_FAULT_MODE");
        if (mode == null) return;
        var m = Machine.Boot(new MachineConfig { RamBytes = 64L << 20, VmallocBytes = 1UL << 30 });
        byte* p = m.Vmalloc.Vmalloc(4096);
        Console.Error.WriteLine($"probe {mode} at {(nint)p:x}");
        switch (mode)
        {
            case "guard":
                memset((nint)(p + 4096), 1, 1);
                break;
            case "stale":
                m.Vmalloc.Vfree(p);
                memset((nint)p, 1, 1);
                break;
            case "control":
                memset((nint)(p + 4095), 1, 1);
                m.Vmalloc.Vfree(p);
                Environment.Exit(42);
                break;
        }
        Environment.Exit(0); // reaching here means the touch did not fault
    }
}

namespace Kmem.Tests.Vmalloc
{
    internal static class FaultProbe
    {
        /// <summary>Run the probe in a child process; returns (exit code, stderr).</summary>
        public static (int Exit, string Stderr) Run(string mode)
        {
            string dir = AppContext.BaseDirectory;
            var psi = new ProcessStartInfo("dotnet", [Path.Combine(dir, "Kmem.Cli.dll"), "--help"])
            {
                RedirectStandardError = true,
                RedirectStandardOutput = true,
                UseShellExecute = false,
            };
            psi.Environment["DOTNET_STARTUP_HOOKS"] = typeof(FaultProbe).Assembly.Location;
            psi.Environment["KMEM_FAULT_MODE"] = mode;
            psi.Environment["DOTNET_DbgEnableMiniDump"] = "0";
            psi.Environment["DOTNET_EnableCrashReport"] = "0";
            using var p = Process.Start(psi)!;
            var err = p.StandardError.ReadToEndAsync();
            p.StandardOutput.ReadToEnd();
            if (!p.WaitForExit(60_000))
            {
                p.Kill();
                throw new TimeoutException("fault probe hung");
            }
            return (p.ExitCode, err.Result);
        }
    }
}
