using System.Runtime.InteropServices;
using System.Text;
using Kmem.Tracing;

namespace Kmem.Tests.Tracing;

/// <summary>
/// The parser's fast paths (one-pass timestamp, 16-digit vector hex, the per-kind field layouts) against the
/// general code they short-cut: every boundary of the fast shape must give what the general path gives.
/// </summary>
public class FtraceFastPathTests
{
    private static string Line(string timestamp) =>
        $"            bash-5535    [000] .....  {timestamp}: kfree: call_site=vfs_fstatat+0x71/0xb0 ptr=00000000f7868b41";

    private static (bool Ok, long Us) ParseTimestamp(string ts)
    {
        var reader = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(Line(ts) + "\n")), "t.trace",
            TraceCompression.None, FtraceReaderOptions.Lenient);
        bool ok = reader.TryRead(out TraceEvent ev);
        return (ok, ev.TimestampUs);
    }

    [Theory]
    [InlineData("5871.700806", 5871_700806L)]
    [InlineData("0.000001", 1L)]
    [InlineData("5.1", 5_100000L)]          // short fraction: scaled up
    [InlineData("5.12345", 5_123450L)]
    [InlineData("1.123456789", 1_123456L)]  // ns clock: truncated, not rounded
    [InlineData("1.999999999", 1_999999L)]
    [InlineData("1.1234567891", 1_123456L)] // 10 fraction digits: general path
    [InlineData("999999999999.000001", 999999999999_000001L)] // 12 second digits: the fast path's limit
    [InlineData("1000000000000.5", 1000000000000_500000L)]    // 13: general path
    [InlineData("00012.5", 12_500000L)]
    [InlineData("5871", 5871_000000L)]      // no fraction: general path
    [InlineData("-0.5", 500000L)]           // general path's historical acceptance of "-0"
    public void Timestamp_shapes(string ts, long us) => Assert.Equal((true, us), ParseTimestamp(ts));

    [Theory]
    [InlineData("5871.")]
    [InlineData(".5")]
    [InlineData("5871.7008a6")]
    [InlineData("58x1.700806")]
    [InlineData("5871..700806")]
    [InlineData("5871.700806.1")]
    [InlineData("-1.5")]
    [InlineData("99999999999999.5")] // above long.MaxValue / 10^6 seconds
    public void Timestamp_rejects(string ts) => Assert.False(ParseTimestamp(ts).Ok);

    // Reference: digit by digit.
    private static bool ReferenceHex(string s, out ulong value)
    {
        value = 0;
        if (s.Length is 0 or > 16)
            return false;
        foreach (char c in s)
        {
            int d = c is >= '0' and <= '9' ? c - '0' : c is >= 'a' and <= 'f' ? c - 'a' + 10 : c is >= 'A' and <= 'F' ? c - 'A' + 10 : -1;
            if (d < 0)
                return false;
            value = (value << 4) | (uint)d;
        }
        return true;
    }

    public static TheoryData<string> HexCases()
    {
        var data = new TheoryData<string>
        {
            "00000000f7868b41", "0000000000000000", "ffffffffffffffff", "FFFFFFFFFFFFFFFF", "0123456789abcdef",
            "fedcba9876543210", "0123456789ABCDEF", "8000000000000001", "f7868b41", "1", "00000000f7868b4", // 15
        };
        // A non-hex byte at each position of a 16-digit value, with the bytes just outside each digit range.
        foreach (char bad in "/:@G`g x\u00ff")
            for (int k = 0; k < 16; k++)
                if (!(bad == 'x' && k == 1)) // "0x..." is the accepted prefix, not a bad digit
                    data.Add("0123456789abcdef".Remove(k, 1).Insert(k, bad.ToString()));
        return data;
    }

    [Theory]
    [MemberData(nameof(HexCases))]
    public void Pointer_hex_matches_reference(string s)
    {
        byte[] bytes = Encoding.Latin1.GetBytes(s);
        bool expectedOk = ReferenceHex(s, out ulong expected);
        bool ok = FtraceLineParser.TryParsePointer(bytes, out ulong value);
        Assert.Equal(expectedOk, ok);
        if (ok)
            Assert.Equal(expected, value);
        // The same digits with a 0x prefix (TryParseNumber's hex form) and inside a longer buffer.
        Assert.Equal(expectedOk, FtraceLineParser.TryParseNumber(Encoding.Latin1.GetBytes("0x" + s), out ulong n));
        if (ok)
            Assert.Equal(expected, n);
        byte[] padded = Encoding.Latin1.GetBytes(s + " zzzzzzzzzzzzzzzz");
        Assert.Equal(expectedOk, FtraceLineParser.TryParsePointer(padded.AsSpan(0, s.Length), out ulong p));
        if (ok)
            Assert.Equal(expected, p);
    }

    [Fact]
    public void Pointer_longer_than_16_digits_is_rejected() =>
        Assert.False(FtraceLineParser.TryParsePointer("00000000000000000"u8, out _));

    private static (TraceEvent Event, FtraceReader Reader) Read(string line)
    {
        var reader = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(line + "\n")), "t.trace",
            TraceCompression.None, FtraceReaderOptions.Lenient);
        Assert.True(reader.TryRead(out TraceEvent ev), "no event: " + string.Join("; ", reader.MalformedSamples.Select(m => m.Reason)));
        return (ev, reader);
    }

    [Theory]
    [InlineData("kworker/u8:1 [x]", 7, 42)]      // '[' in the comm, not followed by digits
    [InlineData("a [1 b", 7, 42)]                // " [digits" without ']'
    [InlineData("[00]", 7, 42)]                  // "[digits]" not preceded by a space
    public void Cpu_column_is_the_first_space_bracket_digits_bracket(string comm, int cpu, int pid)
    {
        var (ev, r) = Read($"{comm}-{pid}    [{cpu:D3}] .....  5871.743967: kfree: call_site=f+0x1/0x2 ptr=00000000f7868b41");
        Assert.Equal((comm, pid, cpu), (r.Strings[ev.CommId], ev.Pid, ev.Cpu));
    }

    // " [digits]" inside the comm is taken as the cpu column (the first one wins), leaving "x" without a pid.
    [Fact]
    public void Comm_with_cpu_like_column_is_malformed()
    {
        var reader = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(
            "x [12]y-42    [007] .....  5871.743967: kfree: call_site=f+0x1/0x2 ptr=00000000f7868b41\n")), "t.trace",
            TraceCompression.None, FtraceReaderOptions.Lenient);
        Assert.False(reader.TryRead(out _));
        Assert.Equal("bad task-pid column", reader.MalformedSamples[0].Reason);
    }

    // Field values ending at every offset relative to the 16-byte blocks of the space search, including the line's
    // last bytes (the overlapping tail load) and lines shorter than one block.
    [Fact]
    public void Values_of_every_length_end_where_the_space_is()
    {
        for (int len = 1; len <= 40; len++)
        {
            string site = new string('s', len);
            var (ev, r) = Read($"bash-5535 [000] ..... 1.5: kfree: call_site={site} ptr=00000000f7868b41");
            Assert.Equal(site, r.Strings[ev.CallSiteId]);
            Assert.Equal(0xf7868b41UL, ev.Ptr);
            (ev, r) = Read($"bash-5535 [000] ..... 1.5: kmem_cache_free: call_site=f+0x1/0x2 ptr=1 name={site}");
            Assert.Equal(site, r.Strings[ev.CacheNameId]);
            (ev, r) = Read($"bash-5535 [000] ..... 1.5: kmem_cache_free: call_site=f+0x1/0x2 ptr=1 name={site} ");
            Assert.Equal(site, r.Strings[ev.CacheNameId]);
        }
    }

    [Fact]
    public void Short_and_long_lines()
    {
        var (ev, r) = Read("a-1 [0] ....  1: kfree: ptr=1 call_site=f"); // shorter than the usual 16-byte steps
        Assert.Equal(("a", 1, 1UL), (r.Strings[ev.CommId], ev.Pid, ev.Ptr));
        string longSite = new string('q', 700); // well over the old 512-byte space-mask limit
        (ev, r) = Read($"bash-5535 [000] ..... 1.5: kfree: call_site={longSite} ptr=00000000f7868b41");
        Assert.Equal(longSite, r.Strings[ev.CallSiteId]);
        Assert.Equal(0xf7868b41UL, ev.Ptr);
    }

    [Theory]
    [InlineData("bash-5535", "bash", 5535)]
    [InlineData("a-b-c-7", "a-b-c", 7)]
    [InlineData("x--5", "x-", 5)]
    [InlineData("my comm-0", "my comm", 0)]
    [InlineData("kworker/0:1-2147483647", "kworker/0:1", int.MaxValue)] // 10 digits: the backward scan's limit
    [InlineData("-42", "", 42)]
    [InlineData("t-0000000042", "t", 42)]                               // 10 digits with leading zeros
    [InlineData("t-00000000042", "t", 42)]                              // 11: general path
    public void Task_pid_column(string commPid, string comm, int pid)
    {
        var (ev, r) = Read($"{commPid}    [001] .....  1.5: kfree: call_site=f ptr=1");
        Assert.Equal((comm, pid), (r.Strings[ev.CommId], ev.Pid));
    }

    [Theory]
    [InlineData("t-2147483648")] // int.MaxValue + 1
    [InlineData("t-99999999999")]
    [InlineData("t-5x")]
    [InlineData("t-")]
    [InlineData("t5")]
    [InlineData("t--5x")]
    public void Task_pid_column_rejects(string commPid)
    {
        var reader = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes($"{commPid}    [001] .....  1.5: kfree: call_site=f ptr=1\n")),
            "t.trace", TraceCompression.None, FtraceReaderOptions.Lenient);
        Assert.False(reader.TryRead(out _));
        Assert.Equal("bad task-pid column", reader.MalformedSamples[0].Reason);
    }

    // Leading padding (right-aligned comm), padding after the pid, and before the timestamp, each 0-20 spaces:
    // across the 16-byte windows of the vector space skips.
    [Fact]
    public void Header_padding_of_every_width()
    {
        for (int lead = 0; lead <= 20; lead++)
            for (int afterPid = 1; afterPid <= 20; afterPid++)
                for (int beforeTs = 1; beforeTs <= 20; beforeTs += 3)
                {
                    string line = new string(' ', lead) + "b c-77" + new string(' ', afterPid) + "[003] d..1." +
                        new string(' ', beforeTs) + "12.000034: kfree: call_site=f ptr=1";
                    var (ev, r) = Read(line);
                    Assert.Equal(("b c", 77, 3, 12_000034L, (byte)1), (r.Strings[ev.CommId], ev.Pid, ev.Cpu, ev.TimestampUs, ev.PreemptDepth));
                }
    }

    // ---- The header cache: a line that starts with the previous line's "comm-pid [cpu] flags " reuses its decoding.

    private static List<(TraceEvent Event, string[] Texts)> ReadAll(FtraceReader reader, List<string> malformed)
    {
        var events = new List<(TraceEvent, string[])>();
        while (reader.TryRead(out TraceEvent ev))
        {
            string[] texts = [reader.Strings[ev.CommId], reader.Strings[ev.CallSiteId], reader.Strings[ev.CacheNameId], reader.Strings[ev.GfpTextId]];
            // Ids may differ between two tables; compare the texts and the rest of the record byte for byte.
            ev.CommId = ev.CallSiteId = ev.CacheNameId = ev.GfpTextId = 0;
            events.Add((ev, texts));
        }
        malformed.AddRange(reader.MalformedSamples.Select(m => $"{m.Line}: {m.Reason}"));
        return events;
    }

    private static void AssertSameEvents(Func<FtraceReaderOptions, FtraceReader> open)
    {
        var withCache = new List<string>();
        var without = new List<string>();
        List<(TraceEvent Event, string[] Texts)> a, b;
        using (var r = open(FtraceReaderOptions.Lenient)) a = ReadAll(r, withCache);
        using (var r = open(FtraceReaderOptions.Lenient with { HeaderCache = false, FieldFastPath = false })) b = ReadAll(r, without);
        Assert.Equal(b.Count, a.Count);
        for (int i = 0; i < a.Count; i++)
        {
            TraceEvent x = a[i].Event, y = b[i].Event;
            bool same = MemoryMarshal.AsBytes(new ReadOnlySpan<TraceEvent>(in x)).SequenceEqual(MemoryMarshal.AsBytes(new ReadOnlySpan<TraceEvent>(in y)));
            Assert.True(same && a[i].Texts.SequenceEqual(b[i].Texts), $"event {i} (line {y.Line}) differs with the fast paths");
        }
        Assert.Equal(without, withCache);
    }

    // The header cache and the exact-layout field parsers against the general path, on every line of both traces.
    [Theory]
    [InlineData("forkexec.trace.zst")]
    [InlineData("fs.trace.zst")]
    public void Fast_paths_give_what_the_general_path_gives_on_real_traces(string name) =>
        AssertSameEvents(o => new FtraceReader(TestData.TracePath(name), o));

    // Each column of the header changing on its own after a line that was remembered, a cached header followed by
    // a bad rest of line, a carriage return, headers too short (< 32 bytes) and too long (> 64) to be remembered.
    private const string Edges = """
                    bash-5535    [000] .....  5860.231215: kfree: call_site=a ptr=1
                    bash-5535    [000] .....  5860.231216: kfree: call_site=b ptr=2
                    bash-5536    [000] .....  5860.231217: kfree: call_site=c ptr=3
                    bash-5536    [001] .....  5860.231218: kfree: call_site=d ptr=4
                    bash-5536    [001] d..1.  5860.231219: kfree: call_site=e ptr=5
                    bask-5536    [001] d..1.  5860.231220: kfree: call_site=f ptr=6
                    bask-5536    [001] d..1.  5860.2x1221: kfree: call_site=g ptr=7
                    bask-5536    [001] d..1.  5860.231222: kmem_cache_free: call_site=h ptr=8 name=filp
                    bask-5536    [001] d..1.  5860.231223: kfree: call_site=i ptr=9\r
                    bask-5536    [001] d..1.  5860.231224: kfree: ptr=a
                    bask-5536    [001] d..1.
                    bask-5536    [001] d..1.  5860.231225: unrelated_event: x=1
                    bask-5536    [001] d..1.  5860.231226: kfree: call_site=j ptr=b
        b-1 [0] d..1. 1.5: kfree: call_site=k ptr=c
        b-1 [0] d..1. 1.6: kfree: call_site=l ptr=d
        x-1                                                                   [000] ..... 1.7: kfree: call_site=m ptr=e
        x-1                                                                   [000] ..... 1.8: kfree: call_site=n ptr=f
        """;

    private static FtraceReader EdgeReader(FtraceReaderOptions o) =>
        new(new MemoryStream(Encoding.ASCII.GetBytes(Edges.Replace("\\r", "\r") + "\n")), "edges.trace", TraceCompression.None, o);

    [Fact]
    public void Header_cache_follows_every_column_of_the_header()
    {
        AssertSameEvents(EdgeReader);
        // And the values are the ones each line prints (the comparison above would pass if both paths were wrong).
        using var r = EdgeReader(FtraceReaderOptions.Lenient);
        var got = new List<(string, int, int, byte, bool, ulong)>();
        while (r.TryRead(out TraceEvent ev))
            got.Add((r.Strings[ev.CommId], ev.Pid, ev.Cpu, ev.PreemptDepth, ev.IrqsOff, ev.Ptr));
        Assert.Equal(
        [
            ("bash", 5535, 0, 0, false, 1UL), ("bash", 5535, 0, 0, false, 2UL), ("bash", 5536, 0, 0, false, 3UL),
            ("bash", 5536, 1, 0, false, 4UL), ("bash", 5536, 1, 1, true, 5UL), ("bask", 5536, 1, 1, true, 6UL),
            ("bask", 5536, 1, 1, true, 8UL), ("bask", 5536, 1, 1, true, 9UL), ("bask", 5536, 1, 1, true, 0xbUL),
            ("b", 1, 0, 1, true, 0xcUL), ("b", 1, 0, 1, true, 0xdUL), ("x", 1, 0, 0, false, 0xeUL), ("x", 1, 0, 0, false, 0xfUL),
        ], got);
        Assert.Equal(["bad timestamp", "missing field call_site", "bad timestamp"], r.MalformedSamples.Select(m => m.Reason));
    }

    // Field layouts just off the exact shape the fast paths take (each must fall back, not fail or differ), and the
    // exact shapes themselves.
    private static readonly string[] FieldEdges =
    [
        "kmalloc: call_site=f+0x1/0x2 ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=true",
        "kmalloc: call_site=f+0x1/0x2 ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=false",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=0 accounted=false",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=12345 accounted=false",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-2 accounted=false",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=false ",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=maybe",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=-0 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=true",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=1234567890123456789 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=true",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=123456789012345678 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=true",
        "kmalloc: call_site=f ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=BOGUS node=-1 accounted=true",
        "kmalloc: call_site=f ptr=00000000856261bf  bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=true",
        "kmalloc: ptr=00000000856261bf call_site=f bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL node=-1 accounted=true",
        "kmem_cache_alloc: call_site=g ptr=0000000000000001 name=filp bytes_req=256 bytes_alloc=256 gfp_flags=GFP_KERNEL node=-1 accounted=false",
        "kmem_cache_alloc: call_site=g ptr=0000000000000001 bytes_req=256 bytes_alloc=256 gfp_flags=GFP_KERNEL node=-1 accounted=false",
        "kmem_cache_free: call_site=g ptr=0000000000000001 name=filp",
        "kmem_cache_free: call_site=g ptr=0000000000000001 name=filp ",
        "kmem_cache_free: call_site=g ptr=0000000000000001",
        "kfree: call_site=h ptr=0000000000000000",
        "kfree: call_site=h ptr=(null)",
        "kfree: call_site=h ptr=000000000000001",
        "kfree: call_site=h ptr=0x0000000000001",
        "kfree: call_site=h ptr=000000000000001g",
        "kfree: call_site=h ptr=0000000000000001 extra=1",
        "kfree: call_site= ptr=0000000000000001",
        "mm_page_alloc: page=00000000c1400d3b pfn=0x18cc62 order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP",
        "mm_page_alloc: page=00000000c1400d3b pfn=0x18cc62 order=10 migratetype=0 gfp_flags=GFP_KERNEL",
        "mm_page_alloc: page=00000000c1400d3b pfn=0x18cc62 order=0 migratetype=12 gfp_flags=GFP_KERNEL",
        "mm_page_alloc: page=00000000c1400d3b pfn=1625186 order=0 migratetype=1 gfp_flags=GFP_KERNEL",
        "mm_page_alloc: page=00000000c1400d3b pfn=0x18cc62 order=0 migratetype=1 gfp_flags=",
        "mm_page_alloc: page=00000000c1400d3b pfn=0x18cc62 order=0 migratetype=1 gfp_flags=GFP_KERNEL x=1",
        "mm_page_free: page=00000000f2f8f8b6 pfn=0x148b4f order=0",
        "mm_page_free: page=00000000f2f8f8b6 pfn=0x148b4f order=123",
        "mm_page_free: page=00000000f2f8f8b6 pfn=0x148b4f order=-1",
        "mm_page_free: page=00000000f2f8f8b6 pfn=0x order=0",
        "mm_page_free: page=(null) pfn=0x148b4f order=0",
        "mm_page_free_batched: page=0000000022ffdcb8 pfn=0x134622 order=0",
        "mm_page_free_batched: page=0000000022ffdcb8 pfn=0x134622",
    ];

    private static FtraceReader FieldEdgeReader(FtraceReaderOptions o) => new(new MemoryStream(Encoding.ASCII.GetBytes(
            string.Concat(FieldEdges.Select(f => $"            bash-5535    [000] .....  5860.231215: {f}\n")))),
        "fields.trace", TraceCompression.None, o);

    [Fact]
    public void Field_fast_paths_fall_back_on_anything_but_the_exact_layout()
    {
        AssertSameEvents(FieldEdgeReader);
        using var r = FieldEdgeReader(FtraceReaderOptions.Lenient);
        var events = new List<TraceEvent>();
        while (r.TryRead(out TraceEvent ev)) events.Add(ev);
        TraceEvent k = events[0], page = events.First(e => e.Kind == EventKind.MmPageAlloc);
        Assert.Equal(("f+0x1/0x2", 0x856261bfUL, 11L, 16L, "GFP_KERNEL", -1, true),
            (r.Strings[k.CallSiteId], k.Ptr, k.BytesReq, k.BytesAlloc, r.Strings[k.GfpTextId], k.Node, k.Accounted));
        Assert.Equal((0xc1400d3bUL, 0x18cc62UL, 0, 1, "GFP_HIGHUSER_MOVABLE|__GFP_COMP"),
            (page.Ptr, page.Pfn, page.Order, page.MigrateType, r.Strings[page.GfpTextId]));
        Assert.Contains(events, e => e.Kind == EventKind.MmPageAlloc && e.Order == 10);
        Assert.Contains(events, e => e.Kind == EventKind.Kmalloc && e.Node == 12345);
        Assert.Contains(events, e => e.Kind == EventKind.MmPageAlloc && e.Pfn == 1625186);
    }
}
