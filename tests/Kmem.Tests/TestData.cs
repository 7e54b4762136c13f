namespace Kmem.Tests;

/// <summary>
/// Finds the shared data folder (traces, /proc snapshots) from wherever the tests run. In a developer checkout
/// it sits beside the repository (<c>/work/shared</c> next to <c>/work/main</c> or a worktree); CI clones the
/// repository somewhere else with a copy of <c>shared/</c> beside the clone. So walk up from the test binary and
/// take the first folder that has <c>shared/traces</c> itself or beside it (<c>../shared/traces</c>).
/// </summary>
public static class TestData
{
    private static readonly Lazy<string> Shared = new(Locate);

    /// <summary>Absolute path of the <c>shared</c> folder; throws with the searched paths when there is none.</summary>
    public static string SharedDir => Shared.Value;

    /// <summary>Absolute path of <c>shared/traces/<paramref name="name"/></c>, e.g. <c>TracePath("fs.trace.zst")</c>.</summary>
    public static string TracePath(string name) => Path.Combine(SharedDir, "traces", name);

    private static string Locate()
    {
        string start = AppContext.BaseDirectory;
        for (DirectoryInfo? dir = new(start); dir is not null; dir = dir.Parent)
        {
            string inside = Path.Combine(dir.FullName, "shared");
            if (Directory.Exists(Path.Combine(inside, "traces")))
            {
                return inside;
            }

            if (dir.Parent is not null)
            {
                string beside = Path.Combine(dir.Parent.FullName, "shared");
                if (Directory.Exists(Path.Combine(beside, "traces")))
                {
                    return beside;
                }
            }
        }

        throw new DirectoryNotFoundException(
            $"No 'shared/traces' folder found in or beside any parent of '{start}'. "
            + "Put the shared data folder next to the repository clone.");
    }
}
