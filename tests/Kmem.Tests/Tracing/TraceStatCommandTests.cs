using System.Text.Json;
using Kmem.Cli;

namespace Kmem.Tests.Tracing;

public sealed class TraceStatCommandTests : IDisposable
{
    private const string Lines =
        "# tracer: nop\n" +
        " bash-100 [000] ..... 10.000001: kmalloc: call_site=foo+0x1/0x10 ptr=00000000deadbeef bytes_req=24 bytes_alloc=32 gfp_flags=GFP_KERNEL node=-1 accounted=false\n" +
        " bash-100 [001] ..... 10.000002: kfree: call_site=bar+0x2/0x20 ptr=00000000deadbeef\n" +
        " bash-100 [000] ..... 10.000003: mm_page_alloc: page=00000000c1400d3b pfn=0x18cc62 order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP\n";

    private readonly string _dir = Directory.CreateTempSubdirectory("kmem-stat-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        string p = Path.Combine(_dir, name);
        File.WriteAllText(p, text);
        return p;
    }

    private static (int Code, string Out, string Err) Kmem(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Execute(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Fact]
    public void Text_report_counts_events_per_kind()
    {
        var (code, output, _) = Kmem("trace", "stat", Write("t.trace", Lines));
        Assert.Equal(0, code);
        Assert.Contains("kmalloc                          1", output);
        Assert.Contains("mm_page_alloc                    1", output);
        Assert.Contains("cross-CPU frees                    1", output);
    }

    [Fact]
    public void Json_report_parses_and_has_totals()
    {
        var (code, output, _) = Kmem("trace", "stat", Write("t.trace", Lines), "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(3, doc.RootElement.GetProperty("events").GetInt64());
        Assert.Equal(1, doc.RootElement.GetProperty("slab").GetProperty("crossCpuFrees").GetInt64());
    }

    [Fact]
    public void Malformed_line_is_counted_by_default_and_fatal_with_strict()
    {
        string p = Write("bad.trace", Lines + " bash-100 [000] ..... 10.000004: kmalloc: call_site=x ptr=zz\n");
        var (code, output, _) = Kmem("trace", "stat", p);
        Assert.Equal(0, code);
        Assert.Contains("malformed                          1", output);
        Assert.Contains("bad.trace:5:", output);

        (code, _, string err) = Kmem("trace", "stat", p, "--strict");
        Assert.Equal(1, code);
        Assert.Contains("bad.trace:5", err);
    }

    [Fact]
    public void Usage_errors_exit_2()
    {
        Assert.Equal(2, Kmem("trace", "stat").Code);
        Assert.Equal(2, Kmem("trace", "stat", Path.Combine(_dir, "missing.trace")).Code);
        Assert.Equal(2, Kmem("trace", "frobnicate").Code);
        Assert.Equal(2, Kmem("trace", "stat", Write("t.trace", Lines), "--bogus").Code);
    }

    [Fact]
    public void Real_trace_stat_matches_the_reader()
    {
        var (code, output, _) = Kmem("trace", "stat", TestData.TracePath("fs.trace.zst"), "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(402_273, doc.RootElement.GetProperty("events").GetInt64());
        Assert.Equal(0, doc.RootElement.GetProperty("malformedLines").GetInt64());
    }
}
