using Kmem.Cli;

namespace Kmem.Tests.Cli;

/// <summary>Bad command lines: one line on stderr, exit code 2, no stack trace, nothing on stdout.</summary>
public class CliErrorTests
{
    [Theory]
    [InlineData("frobnicate")]
    [InlineData("proc meminfo --ram abc")]
    [InlineData("proc meminfo --ram -5G")]
    [InlineData("proc meminfo --zones DMA=x")]
    [InlineData("proc meminfo --zones Bogus=5")]
    [InlineData("proc meminfo --zones DMA32")]
    [InlineData("proc meminfo --bogus 1")]
    [InlineData("proc nosuchview")]
    [InlineData("proc meminfo --cpus 0")]
    [InlineData("proc meminfo --cpus many")]
    [InlineData("proc meminfo --profile sparc")]
    [InlineData("proc meminfo --ram 8M")]
    [InlineData("run --ops 0")]
    [InlineData("bench --rounds 0")]
    public void BadArguments_OneLine_Exit2(string line)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        int rc = Program.Execute(line.Split(' '), stdout, stderr);
        string err = stderr.ToString();
        Assert.Equal(2, rc);
        Assert.Equal("", stdout.ToString());
        Assert.StartsWith("kmem: ", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.DoesNotContain("   at ", err);
        Assert.DoesNotContain("Exception", err);
    }

    [Fact]
    public void BenchJson_HasMachineAndResults()
    {
        var stdout = new StringWriter();
        int rc = Program.Execute(["bench", "--json", "--rounds", "1", "--round-ms", "2", "--filter", "-64"], stdout, new StringWriter());
        Assert.Equal(0, rc);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout.ToString());
        var root = doc.RootElement;
        Assert.True(root.GetProperty("machine").GetProperty("cores").GetInt32() >= 1);
        Assert.False(string.IsNullOrEmpty(root.GetProperty("machine").GetProperty("dotnet").GetString()));
        var names = root.GetProperty("results").EnumerateArray().Select(r => r.GetProperty("name").GetString()).ToList();
        Assert.Contains("glibc-malloc-64", names);
        var glibc = root.GetProperty("results").EnumerateArray().First(r => r.GetProperty("name").GetString() == "glibc-malloc-64");
        Assert.Equal(1.0, glibc.GetProperty("vs_glibc").GetDouble());
        Assert.True(glibc.GetProperty("ns_per_op").GetDouble() > 0);
        // Issue 3's two-thread rows, measured on two worker threads, wherever there are two cores to run them.
        if (Environment.ProcessorCount >= 2)
            foreach (var name in new[] { "kmalloc-64-1worker", "kmalloc-64-2threads", "kmalloc-64-xcpu" })
                Assert.True(root.GetProperty("results").EnumerateArray().First(r => r.GetProperty("name").GetString() == name)
                    .GetProperty("ns_per_op").GetDouble() > 0, name);
    }

    [Fact]
    public void BenchJson_HasVmallocAndMmapRows()
    {
        var stdout = new StringWriter();
        int rc = Program.Execute(["bench", "--json", "--rounds", "1", "--round-ms", "2", "--filter", "1page"], stdout, new StringWriter());
        Assert.Equal(0, rc);
        using var doc = System.Text.Json.JsonDocument.Parse(stdout.ToString());
        var rows = doc.RootElement.GetProperty("results").EnumerateArray().ToDictionary(r => r.GetProperty("name").GetString()!);
        Assert.True(rows["vmalloc-1page"].GetProperty("ns_per_op").GetDouble() > 0);
        Assert.True(rows["mmap-1page"].GetProperty("ns_per_op").GetDouble() > 0);
        // Without the glibc row in the run there is nothing to divide by: null, never a made-up ratio.
        Assert.Equal(System.Text.Json.JsonValueKind.Null, rows["mmap-1page"].GetProperty("vs_glibc").ValueKind);
    }
}
