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
}
