namespace Kmem.Tests.Vmalloc;

/// <summary>Process-killing checks, each in a child process (see <see cref="FaultProbe"/>).</summary>
public class GuardPageTests
{
    // SIGSEGV is signal 11; a child killed by it exits with 128 + 11 as .NET reports it.
    private const int DiedOfSigsegv = 139;

    [Fact]
    public void Control_TouchingTheLastByteOfTheAreaDoesNotFault()
    {
        var (exit, err) = FaultProbe.Run("control");
        Assert.True(exit == 42, $"exit {exit}: {err}");
    }

    [Fact]
    public void TouchingTheGuardPageFaults()
    {
        var (exit, err) = FaultProbe.Run("guard");
        Assert.True(exit == DiedOfSigsegv, $"exit {exit}: {err}");
    }

    [Fact]
    public void TouchingAnAreaAfterVfreeFaults()
    {
        var (exit, err) = FaultProbe.Run("stale");
        Assert.True(exit == DiedOfSigsegv, $"exit {exit}: {err}");
    }
}
