using System.Text.Json;
using Kmem.Cli;
using Kmem.Cli.Commands;

namespace Kmem.Tests.Cli;

/// <summary>
/// <c>kmem replay</c> first replays the trace's first events on a scratch machine (so the timed replay is not
/// compiling); that warm-up must leave no trace in the report: the same counts and live memory as without it.
/// </summary>
public class ReplayWarmUpTests
{
    private static JsonElement Replay(params string[] extra)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        string[] args = ["replay", TestData.TracePath("fs.trace.zst"), "--json", "--max-events", "60000", "--ram", "512M", .. extra];
        Assert.True(Program.Execute(args, o, e) == 0, e.ToString());
        return JsonDocument.Parse(o.ToString()).RootElement.Clone();
    }

    [Fact]
    public void The_warm_up_does_not_change_the_replay()
    {
        JsonElement warm = Replay(), cold = Replay("--no-warmup");
        Assert.True(ReplayCommand.WarmUpEvents < 60_000, "the timed replay should go past what the warm-up replayed");
        foreach (string key in new[] { "events", "kmalloc_size_class_checked", "kmalloc_size_class_mismatches", "allocator_errors",
            "allocation_failures", "unknown_frees", "null_frees", "lost_frees", "atomic_events", "live_at_end" })
            Assert.Equal(cold.GetProperty(key).GetInt64(), warm.GetProperty(key).GetInt64());
        Assert.Equal(60_000, warm.GetProperty("events").GetInt64());
        Assert.Equal(cold.GetProperty("live").ToString(), warm.GetProperty("live").ToString());
        Assert.Equal(cold.GetProperty("events_by_type").ToString(), warm.GetProperty("events_by_type").ToString());
    }
}
