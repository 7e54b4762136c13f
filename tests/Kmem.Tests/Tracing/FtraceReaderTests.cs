using System.IO.Compression;
using System.Text;
using Kmem.Tracing;

namespace Kmem.Tests.Tracing;

/// <summary>Malformed input (strict and lenient), compression detection and equivalence, and the real traces.</summary>
public class FtraceReaderTests
{
    private const string Good1 = " capture-kmem-tr-4902    [000] .....  5860.231532: kmalloc: call_site=alloc_fdtable+0x55/0x140 ptr=00000000d7d61d6a bytes_req=56 bytes_alloc=64 gfp_flags=GFP_KERNEL_ACCOUNT node=-1 accounted=true";
    private const string Good2 = " capture-kmem-tr-4902    [000] .....  5860.231216: kmem_cache_free: call_site=task_work_run+0x59/0x90 ptr=00000000ea5bf0ed name=filp";

    private static FtraceReader FromText(string text, bool strict, string name = "bad.trace") =>
        new(new MemoryStream(Encoding.ASCII.GetBytes(text)), name, TraceCompression.None,
            strict ? FtraceReaderOptions.StrictMode : FtraceReaderOptions.Lenient);

    private static List<TraceEvent> ReadAll(FtraceReader r)
    {
        var list = new List<TraceEvent>();
        while (r.TryRead(out TraceEvent ev))
            list.Add(ev);
        return list;
    }

    public static TheoryData<string, string> BadLines => new()
    {
        { Good1.Replace("bytes_req=56", "bytes_req=abc"), "bad value for bytes_req" },
        { Good1.Replace("ptr=00000000d7d61d6a", "ptr=00000000d7d6zz6a"), "bad value for ptr" },
        { Good1.Replace("gfp_flags=GFP_KERNEL_ACCOUNT", "gfp_flags=GFP_BOGUS"), "bad value for gfp_flags" },
        { Good1.Replace("accounted=true", "accounted=maybe"), "bad value for accounted" },
        { Good1.Replace("bytes_req=56 ", ""), "missing field bytes_req" },
        // truncated lines
        { Good1[..(Good1.IndexOf("kmalloc:") + 4)], "no event name" },
        { Good1[..(Good1.IndexOf("bytes_req=") + 6)], "field is not key=value" },
        { Good1[..(Good1.IndexOf("bytes_req=") + 10)], "bad value for bytes_req" },
        { Good1[..(Good1.IndexOf("bytes_alloc="))], "missing field bytes_alloc" },
        { Good1[..35], "bad timestamp" },
        { Good1.Replace("[000]", "[0x0]"), "no [cpu] column" },
        { Good1.Replace(".....", ".?..."), "bad flags column" },
        { Good1.Replace("5860.231532:", "5860.2x1532:"), "bad timestamp" },
        { Good1.Replace("-4902 ", "-49x2 "), "bad task-pid column" },
        { Good1.Replace("node=-1", "node"), "field is not key=value" },
        { Good1.Replace("bytes_req=56", "bytes_req=99999999999999999999999"), "bad value for bytes_req" },
    };

    [Theory]
    [MemberData(nameof(BadLines))]
    public void Strict_mode_names_file_line_and_reason(string bad, string reason)
    {
        using var r = FromText($"{Good1}\n{Good2}\n{bad}\n{Good2}\n", strict: true);
        Assert.True(r.TryRead(out _));
        Assert.True(r.TryRead(out _));
        var ex = Assert.Throws<TraceFormatException>(() => r.TryRead(out _));
        Assert.StartsWith("bad.trace:3: ", ex.Message);
        Assert.Equal(("bad.trace", 3L), (ex.File, ex.LineNumber));
        Assert.StartsWith(reason, ex.Reason);
        Assert.IsAssignableFrom<KmemException>(ex);
    }

    [Theory]
    [MemberData(nameof(BadLines))]
    public void Lenient_mode_counts_and_continues(string bad, string reason)
    {
        using var r = FromText($"{Good1}\n{bad}\n{Good2}\n{bad}\n", strict: false);
        var events = ReadAll(r);
        Assert.Equal([EventKind.Kmalloc, EventKind.KmemCacheFree], events.Select(e => e.Kind));
        Assert.Equal(3, events[1].Line);
        Assert.Equal((4L, 2L, 2L), (r.Lines, r.Events, r.Malformed));
        Assert.Equal(2, r.MalformedSamples.Count);
        Assert.Equal([2L, 4L], r.MalformedSamples.Select(s => s.Line));
        Assert.StartsWith(reason, r.MalformedSamples[0].Reason);
        Assert.StartsWith("bad.trace:2: ", r.MalformedSamples[0].ToString());
    }

    [Fact]
    public void Random_binary_junk_never_crashes_lenient_and_throws_strict()
    {
        var rng = new Random(42);
        for (int round = 0; round < 20; round++)
        {
            byte[] junk = new byte[rng.Next(1, 300_000)];
            rng.NextBytes(junk);
            if (round % 2 == 0) // mix junk into real lines, also over-long lines without '\n'
            {
                byte[] good = Encoding.ASCII.GetBytes(Good1 + "\n");
                junk = [.. good, .. junk, (byte)'\n', .. good];
            }
            var options = new FtraceReaderOptions { Strict = false, BufferSize = 4096 };
            using var lenient = new FtraceReader(new MemoryStream(junk), "junk.bin", TraceCompression.None, options);
            var events = ReadAll(lenient);
            Assert.True(lenient.Malformed > 0);
            Assert.Equal(lenient.Lines, lenient.Events + lenient.Malformed + lenient.Skipped + lenient.Comments);
            if (round % 2 == 0)
                Assert.True(events.Count >= 2);

            using var strict = new FtraceReader(new MemoryStream(junk), "junk.bin", TraceCompression.None,
                options with { Strict = true });
            var ex = Assert.Throws<TraceFormatException>(() => ReadAll(strict));
            Assert.Matches(@"^junk\.bin:\d+: ", ex.Message);
        }
    }

    [Fact]
    public void Over_long_line_is_one_malformed_line()
    {
        string text = Good1 + "\n" + new string('x', 10_000) + "\n" + Good2 + "\n";
        var options = new FtraceReaderOptions { Strict = false, BufferSize = 1024 };
        using var r = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(text)), "long.trace", TraceCompression.None, options);
        var events = ReadAll(r);
        Assert.Equal(2, events.Count);
        Assert.Equal(3, events[1].Line);
        Assert.Equal((3L, 1L), (r.Lines, r.Malformed));
        Assert.StartsWith("line longer than", r.MalformedSamples[0].Reason);
    }

    [Fact]
    public void Plain_gzip_and_zstd_files_give_identical_events()
    {
        // The first 5,000 lines of the real trace, written three ways (plus a last line without '\n').
        string real = TestData.TracePath("forkexec.trace.zst");
        string[] lines = FirstLines(real, 5000);
        byte[] plain = Encoding.ASCII.GetBytes(string.Join('\n', lines));
        string dir = Directory.CreateTempSubdirectory("kmem-trace-").FullName;
        try
        {
            string txt = Path.Combine(dir, "t.trace");
            string gz = Path.Combine(dir, "t.trace.gz");
            string zst = Path.Combine(dir, "t.trace.zst");
            string zstNoExt = Path.Combine(dir, "t.bin"); // detected by magic alone
            File.WriteAllBytes(txt, plain);
            using (var f = File.Create(gz))
            using (var z = new GZipStream(f, CompressionLevel.Fastest))
                z.Write(plain);
            using (var f = File.Create(zst))
            using (var z = new ZstdSharp.CompressionStream(f, 3))
                z.Write(plain);
            File.Copy(zst, zstNoExt);

            var expected = ReadFile(txt, TraceCompression.None);
            Assert.Equal(5000, expected.Count);
            Assert.Equal(expected, ReadFile(gz, TraceCompression.Gzip));
            Assert.Equal(expected, ReadFile(zst, TraceCompression.Zstd));
            Assert.Equal(expected, ReadFile(zstNoExt, TraceCompression.Zstd));

            // A .zst name on plain text is refused, not read as text.
            string fake = Path.Combine(dir, "fake.trace.zst");
            File.Copy(txt, fake);
            var ex = Assert.Throws<TraceFormatException>(() => new FtraceReader(fake));
            Assert.Contains("fake.trace.zst:0:", ex.Message);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }

        static List<(TraceEvent, string, string)> ReadFile(string path, TraceCompression expected)
        {
            using var r = new FtraceReader(path);
            Assert.Equal(expected, r.Compression);
            var list = new List<(TraceEvent, string, string)>();
            while (r.TryRead(out TraceEvent ev))
                list.Add((ev, r.Strings[ev.CallSiteId], r.Strings[ev.CommId])); // ids may differ; texts may not
            return list.Select(t => (t.Item1 with { CallSiteId = 0, CommId = 0, CacheNameId = 0, GfpTextId = 0 }, t.Item2, t.Item3)).ToList();
        }
    }

    private static string[] FirstLines(string zstPath, int count)
    {
        using var z = new ZstdSharp.DecompressionStream(File.OpenRead(zstPath));
        using var text = new StreamReader(z, Encoding.ASCII);
        var lines = new string[count];
        for (int i = 0; i < count; i++)
            lines[i] = text.ReadLine() ?? throw new InvalidDataException("trace too short");
        return lines;
    }

    [Theory]
    [InlineData("forkexec.trace.zst")]
    [InlineData("fs.trace.zst")]
    public void Real_trace_counts_match_an_independent_line_scan(string name)
    {
        // Independent count: decompress with StreamReader and count " <event>: " per line, like
        // `zstd -dc TRACE | grep -c ' kmalloc: '`. (forkexec: 623,535 lines, all kmem events, per shared/README.md.)
        string path = TestData.TracePath(name);
        var expected = new Dictionary<EventKind, long>();
        long lines = 0;
        using (var z = new ZstdSharp.DecompressionStream(File.OpenRead(path)))
        using (var text = new StreamReader(z, Encoding.ASCII))
        {
            string? line;
            while ((line = text.ReadLine()) is not null)
            {
                lines++;
                for (int k = 1; k < EventKindExtensions.Count; k++)
                {
                    var kind = (EventKind)k;
                    if (line.Contains($" {kind.TraceName()}: ", StringComparison.Ordinal))
                    {
                        expected[kind] = expected.GetValueOrDefault(kind) + 1;
                        break;
                    }
                }
            }
        }

        using var r = new FtraceReader(path); // strict: the real traces have no malformed line
        var actual = new Dictionary<EventKind, long>();
        while (r.TryRead(out TraceEvent ev))
            actual[ev.Kind] = actual.GetValueOrDefault(ev.Kind) + 1;

        Assert.Equal(expected.OrderBy(kv => kv.Key), actual.OrderBy(kv => kv.Key));
        Assert.Equal(lines, r.Lines);
        Assert.Equal(expected.Values.Sum(), r.Events);
        Assert.Equal(0, r.Malformed);
        Assert.True(r.Strings.Count < 1000, $"{r.Strings.Count} interned strings");
        if (name.StartsWith("forkexec", StringComparison.Ordinal))
            Assert.Equal(623_535, r.Events); // shared/README.md
    }
}
