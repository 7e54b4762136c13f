using System.Text.Json;

namespace Kmem.Tests.Tracing;

/// <summary><c>kmem run --trace-out</c> writes kmem's own trace of the main job, and replaying it reproduces the run's allocations.</summary>
[Collection("tracepoints")]
public class RunTraceOutTests
{
    [Fact]
    public void Run_trace_replays_with_every_free_matched_and_no_errors()
    {
        string file = Path.Combine(Path.GetTempPath(), $"kmem-run-{Environment.ProcessId}-{Guid.NewGuid():N}.trace.zst");
        try
        {
            var o = new StringWriter();
            var e = new StringWriter();
            int rc = Kmem.Cli.Program.Execute(["run", "--length", "0.05", "--no-progress", "--trace-out", file], o, e);
            Assert.True(rc == 0, o + e.ToString());
            Assert.Contains("trace: ", o.ToString());
            Assert.DoesNotContain("lost", o.ToString());

            var ro = new StringWriter();
            rc = Kmem.Cli.Program.Execute(["replay", file, "--json"], ro, e);
            Assert.True(rc == 0, e.ToString());
            using var doc = JsonDocument.Parse(ro.ToString());
            var root = doc.RootElement;
            Assert.True(root.GetProperty("events").GetInt64() > 10_000);
            Assert.Equal(0, root.GetProperty("kmalloc_size_class_mismatches").GetInt64());
            Assert.Equal(0, root.GetProperty("allocator_errors").GetInt64());
            // kmem's trace begins at boot and ends after teardown: nothing is freed that was not allocated in it,
            // and nothing it allocated is left.
            Assert.Equal(0, root.GetProperty("unknown_frees").GetInt64());
            Assert.Equal(0, root.GetProperty("live_at_end").GetInt64());
        }
        finally
        {
            File.Delete(file);
        }
    }
}
