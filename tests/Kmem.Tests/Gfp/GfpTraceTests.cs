using System.Globalization;

namespace Kmem.Tests.Gfp;

/// <summary>
/// Checks the formatter and gfp_migratetype() against what a real Linux 6.18 printed: every distinct
/// <c>gfp_flags=</c> string in the shared traces must survive Parse then Format unchanged, and every
/// <c>mm_page_alloc</c> line's <c>migratetype=</c> must equal <see cref="GfpZones.MigrateTypeOf"/> of its flags.
/// </summary>
public class GfpTraceTests
{
    public static TheoryData<string> Traces => new() { "forkexec.trace.zst", "fs.trace.zst" };

    [Theory]
    [MemberData(nameof(Traces))]
    public void Every_trace_gfp_string_round_trips(string trace)
    {
        TraceGfp seen = TraceGfp.Read(TestData.TracePath(trace));
        Assert.NotEmpty(seen.Flags);
        Assert.Contains("GFP_KERNEL", seen.Flags);

        Span<char> buffer = stackalloc char[GfpFormat.MaxLength];
        foreach (string text in seen.Flags)
        {
            Kmem.Gfp gfp = GfpFormat.Parse(text);
            Assert.Equal(text, GfpFormat.Format(gfp));
            Assert.True(GfpFormat.TryFormat(gfp, buffer, out int written));
            Assert.Equal(text, buffer[..written].ToString());
            Assert.Equal(gfp, GfpFormat.Parse(GfpFormat.Format(gfp)));
        }
    }

    [Theory]
    [MemberData(nameof(Traces))]
    public void Page_alloc_migratetype_matches_gfp(string trace)
    {
        TraceGfp seen = TraceGfp.Read(TestData.TracePath(trace));
        Assert.NotEmpty(seen.PageAllocMigrateTypes);
        foreach ((string text, int migratetype) in seen.PageAllocMigrateTypes)
        {
            Assert.Equal((MigrateType)migratetype, GfpZones.MigrateTypeOf(GfpFormat.Parse(text)));

            // And every request the kernel served had a valid zone on its own layout.
            _ = GfpZones.GfpZone(GfpFormat.Parse(text), ZoneSets.X86_64);
        }
    }

    /// <summary>The distinct flags strings of one trace, read once per file and shared by the tests above.</summary>
    private sealed class TraceGfp
    {
        private static readonly Dictionary<string, Lazy<TraceGfp>> Cache = new();

        public HashSet<string> Flags { get; } = new(StringComparer.Ordinal);

        public HashSet<(string Flags, int MigrateType)> PageAllocMigrateTypes { get; } = new();

        public static TraceGfp Read(string path)
        {
            Lazy<TraceGfp> lazy;
            lock (Cache)
            {
                if (!Cache.TryGetValue(path, out lazy!))
                {
                    lazy = new Lazy<TraceGfp>(() => Load(path));
                    Cache.Add(path, lazy);
                }
            }

            return lazy.Value;
        }

        private static TraceGfp Load(string path)
        {
            const string FlagsKey = "gfp_flags=";
            const string MigrateKey = "migratetype=";
            var result = new TraceGfp();
            var seenFlags = new HashSet<string>(StringComparer.Ordinal).GetAlternateLookup<ReadOnlySpan<char>>();

            using var file = File.OpenRead(path);
            using var zstd = new ZstdSharp.DecompressionStream(file);
            using var reader = new StreamReader(zstd, bufferSize: 1 << 16);
            while (reader.ReadLine() is { } text)
            {
                ReadOnlySpan<char> span = text;
                int at = span.IndexOf(FlagsKey, StringComparison.Ordinal);
                if (at < 0)
                {
                    continue;
                }

                ReadOnlySpan<char> flags = span[(at + FlagsKey.Length)..];
                int end = flags.IndexOf(' ');
                if (end >= 0)
                {
                    flags = flags[..end];
                }

                if (!seenFlags.Contains(flags))
                {
                    seenFlags.Add(flags);
                    result.Flags.Add(flags.ToString());
                }

                int mt = span.IndexOf(MigrateKey, StringComparison.Ordinal);
                if (mt >= 0 && span.Contains(" mm_page_alloc: ", StringComparison.Ordinal))
                {
                    ReadOnlySpan<char> digits = span[(mt + MigrateKey.Length)..];
                    digits = digits[..digits.IndexOf(' ')];
                    result.PageAllocMigrateTypes.Add(
                        (flags.ToString(), int.Parse(digits, NumberStyles.Integer, CultureInfo.InvariantCulture)));
                }
            }

            return result;
        }
    }
}
