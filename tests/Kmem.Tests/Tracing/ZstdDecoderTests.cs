using System.Text;
using Kmem.Tracing;
using ZstdSharp.Unsafe;

namespace Kmem.Tests.Tracing;

/// <summary>
/// The two zstd decoders (libzstd through <see cref="NativeZstdStream"/>, managed ZstdSharp): the same bytes on the
/// real traces, the same errors on damaged files, and how the reader picks one.
/// </summary>
public class ZstdDecoderTests
{
    private const string Line = " capture-kmem-tr-4902    [000] .....  5860.231532: kmalloc: call_site=alloc_fdtable+0x55/0x140 ptr=00000000d7d61d6a bytes_req=56 bytes_alloc=64 gfp_flags=GFP_KERNEL_ACCOUNT node=-1 accounted=true\n";
    private const int Lines = 20_000; // ~3.4 MB of text: several read-ahead chunks and reader buffers

    public static TheoryData<ZstdDecoder> Decoders => new() { ZstdDecoder.Native, ZstdDecoder.Managed };

    public static TheoryData<ZstdDecoder, bool> DecodersAndReadAhead => new()
    {
        { ZstdDecoder.Native, true }, { ZstdDecoder.Native, false }, { ZstdDecoder.Managed, true }, { ZstdDecoder.Managed, false },
    };

    private static Stream Decoder(ZstdDecoder d, Stream compressed) => d == ZstdDecoder.Native
        ? new NativeZstdStream(compressed)
        : new ZstdSharp.DecompressionStream(compressed, 1 << 17);

    private static byte[] Compress(byte[] plain, bool checksum = true)
    {
        var ms = new MemoryStream();
        using (var z = new ZstdSharp.CompressionStream(ms, 3, leaveOpen: true))
        {
            z.SetParameter(ZSTD_cParameter.ZSTD_c_checksumFlag, checksum ? 1 : 0);
            z.Write(plain);
        }
        return ms.ToArray();
    }

    private static byte[] Text(int lines) => Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat(Line, lines)));

    private static FtraceReader Reader(byte[] zst, ZstdDecoder d, bool readAhead) =>
        new(new MemoryStream(zst), "t.trace.zst", TraceCompression.Zstd, new FtraceReaderOptions { Zstd = d, ReadAhead = readAhead });

    [Fact]
    public void Libzstd_is_found_where_it_is_installed()
    {
        // Debian's libzstd1 is a required package, so this machine and CI have it; elsewhere Auto falls back.
        bool installed = new[] { "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib" }
            .Any(dir => File.Exists(Path.Combine(dir, ZstdNative.Library)));
        Assert.Equal(installed, ZstdNative.IsAvailable);
        if (installed)
            Assert.Matches(@"^libzstd 1\.\d+\.\d+$", ZstdNative.Description);
    }

    [Theory]
    [InlineData("forkexec.trace.zst")]
    [InlineData("fs.trace.zst")]
    public void Native_and_managed_decode_the_real_traces_to_identical_bytes(string name)
    {
        string path = TestData.TracePath(name);
        using var native = new NativeZstdStream(File.OpenRead(path));
        using var managed = new ZstdSharp.DecompressionStream(File.OpenRead(path));
        // Unequal read sizes, so the comparison does not depend on both decoders splitting output the same way.
        byte[] a = new byte[1 << 20], b = new byte[(1 << 20) + 4099];
        int aLen = 0, bLen = 0;
        long total = 0;
        while (true)
        {
            if (aLen == 0) aLen = native.ReadAtLeast(a, a.Length, throwOnEndOfStream: false);
            if (bLen == 0) bLen = managed.ReadAtLeast(b, b.Length, throwOnEndOfStream: false);
            int n = Math.Min(aLen, bLen);
            if (n == 0)
            {
                Assert.Equal(0, aLen); // both ended together
                Assert.Equal(0, bLen);
                break;
            }
            Assert.True(a.AsSpan(0, n).SequenceEqual(b.AsSpan(0, n)), $"bytes differ within [{total}, {total + n})");
            a.AsSpan(n, aLen - n).CopyTo(a);
            b.AsSpan(n, bLen - n).CopyTo(b);
            aLen -= n;
            bLen -= n;
            total += n;
        }
        Assert.True(total > 50_000_000, $"{total} bytes");
    }

    [Theory]
    [MemberData(nameof(Decoders))]
    public void Reading_allocates_nothing_per_event_once_warm(ZstdDecoder d)
    {
        // Read-ahead off, so decompression runs on this thread and its allocations are counted here.
        var options = new FtraceReaderOptions { Zstd = d, ReadAhead = false };
        using var r = new FtraceReader(TestData.TracePath("forkexec.trace.zst"), options);
        // Warm: buffers in place and most of the trace's texts interned. 300,000 events, not fewer: the string table's
        // dictionary grows once more near event 121,000 (a new comm; ~12 KB), which inside the measured stretch left
        // too little room for what the runtime itself may allocate on this thread while tiering up under a loaded
        // test run.
        for (int i = 0; i < 300_000; i++)
            Assert.True(r.TryRead(out _));
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 300_000; i++)
            Assert.True(r.TryRead(out _));
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        // A few texts first seen in this stretch may be interned (a string and a cache key each); nothing per event.
        Assert.True(allocated < 16 * 1024, $"{allocated} bytes allocated over 300,000 events");
    }

    [Theory]
    [MemberData(nameof(Decoders))]
    public void Concatenated_and_skippable_frames_and_empty_input_decode(ZstdDecoder d)
    {
        byte[] a = Text(100), b = Encoding.ASCII.GetBytes("second frame\n");
        // A skippable frame (magic 0x184D2A5?, little-endian length, payload) between two data frames.
        byte[] skippable = [0x50, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3];
        byte[] zst = [.. Compress(a), .. skippable, .. Compress(b, checksum: false)];
        using (var z = Decoder(d, new MemoryStream(zst)))
        {
            var output = new MemoryStream();
            z.CopyTo(output, 7); // tiny reads: output split across many calls
            Assert.Equal([.. a, .. b], output.ToArray());
            Assert.Equal(0, z.Read(new byte[16]));
        }
        using (var empty = Decoder(d, new MemoryStream()))
            Assert.Equal(0, empty.Read(new byte[16]));
    }

    [Theory]
    [MemberData(nameof(DecodersAndReadAhead))]
    public void Reader_gives_the_same_events_with_either_decoder(ZstdDecoder d, bool readAhead)
    {
        byte[] zst = Compress(Text(Lines));
        using var r = Reader(zst, d, readAhead);
        long n = 0;
        while (r.TryRead(out TraceEvent ev))
        {
            Assert.Equal(EventKind.Kmalloc, ev.Kind);
            Assert.Equal(56, ev.BytesReq);
            n++;
        }
        Assert.Equal(Lines, n);
        Assert.Equal(0, r.Malformed);
    }

    public static TheoryData<string, ZstdDecoder, bool> Damage
    {
        get
        {
            var data = new TheoryData<string, ZstdDecoder, bool>();
            foreach (string damage in new[] { "truncated", "header only", "checksum", "trailing junk" })
                foreach (ZstdDecoder d in new[] { ZstdDecoder.Native, ZstdDecoder.Managed })
                    foreach (bool readAhead in new[] { true, false })
                        data.Add(damage, d, readAhead);
            return data;
        }
    }

    [Theory]
    [MemberData(nameof(Damage))]
    public void Damaged_zst_is_an_IOException_naming_the_problem(string damage, ZstdDecoder d, bool readAhead)
    {
        byte[] good = Compress(Text(Lines));
        (byte[] zst, string reason) = damage switch
        {
            "truncated" => (good[..(good.Length / 2)], "Premature end of stream"),
            "header only" => (good[..6], "Premature end of stream"),
            "checksum" => (Flip(good, good.Length - 1), "Restored data doesn't match checksum"),
            _ => ([.. good, .. "junk after the frame"u8], "Unknown frame descriptor"),
        };
        using var r = Reader(zst, d, readAhead);
        long events = 0;
        var ex = Assert.ThrowsAny<IOException>(() =>
        {
            while (r.TryRead(out _)) events++;
        });
        Assert.Contains(reason, ex.Message);
        // The events before the damage come first: all of them when it follows the frame. (A checksum error drops
        // the output of the decoder's last call, whose data the checksum has just declared wrong.)
        if (damage == "trailing junk")
            Assert.Equal(Lines, events);
        if (damage == "truncated")
            Assert.True(events > Lines / 4, $"{events} events before the error");

        static byte[] Flip(byte[] b, int i)
        {
            byte[] c = (byte[])b.Clone();
            c[i] ^= 0xFF;
            return c;
        }
    }

    [Theory]
    [InlineData(4096)]
    [InlineData(65536)]
    [InlineData(1 << 20)]
    public void Lent_read_ahead_chunks_give_what_the_plain_reader_gives(int bufferSize)
    {
        // With read-ahead the reader parses out of the decompressor's chunks and carries a chunk's last partial
        // line into the next one's 4 KiB headroom; the plain reader copies into its own buffer. Over ~5 MB of lines
        // of every kind of length (short, around the headroom, longer than the buffer, longer than a chunk, a last
        // line without newline), both must see the same lines, events and malformed lines.
        var rng = new Random(6);
        var text = new StringBuilder();
        // Chunks are exactly ReadAheadStream.ChunkStart apart in the decompressed text: make a line start just before
        // the first boundaries, so that the carried partial line is 0, 1, and around the 4 KiB headroom long.
        foreach (int length in new[] { bufferSize - 2, bufferSize - 1, bufferSize, bufferSize + 1 }) // around the limit
            text.Append('w', length).Append('\n').Append(Line);
        int[] carries = [0, 1, ReadAheadStream.Headroom - 1, ReadAheadStream.Headroom, ReadAheadStream.Headroom + 1];
        int firstBoundary = 1;
        while (ReadAheadStream.ChunkStart(firstBoundary) - 16_384 < text.Length)
            firstBoundary++;
        for (int k = 0; k < carries.Length; k++)
        {
            int boundary = (int)ReadAheadStream.ChunkStart(firstBoundary + k);
            while (text.Length < boundary - 16_384)
                text.Append(Line);
            int filler = boundary - carries[k] - text.Length - 1; // a line of 'f's, then the straddling line
            text.Append('f', filler).Append('\n').Append(' ', Math.Max(0, carries[k] + 100 - Line.Length)).Append(Line);
        }
        text.Append('q', ReadAheadStream.ChunkSize + 1000).Append('\n').Append(Line); // a line across a whole chunk
        int n = 0;
        int stop = text.Length + 3_000_000;
        while (text.Length < stop)
        {
            switch (rng.Next(20))
            {
                case 0: text.Append('x', rng.Next(4000, 4200)).Append('\n'); break;           // around the headroom
                case 1: text.Append('y', rng.Next(1, 70_000)).Append('\n'); break;            // around small buffers
                case 2 when n++ % 8 == 0: text.Append('z', rng.Next(1_000_000, 1_200_000)).Append('\n'); break; // around 1 MiB buffers
                default: text.Append(Line); break;
            }
        }
        text.Append(Line.TrimEnd('\n')); // the last line has no newline
        byte[] plain = Encoding.ASCII.GetBytes(text.ToString());
        var options = new FtraceReaderOptions { Strict = false, BufferSize = bufferSize, MaxMalformedSamples = 1000 };
        var expected = Read(new FtraceReader(new MemoryStream(plain), "t.trace", TraceCompression.None, options));
        var lent = Read(new FtraceReader(new MemoryStream(Compress(plain)), "t.trace", TraceCompression.Zstd, options));
        Assert.Equal(expected.Counts, lent.Counts);
        Assert.Equal(expected.Samples, lent.Samples);
        Assert.Equal(expected.EventLines, lent.EventLines);
        Assert.True(expected.Counts.Malformed > 0);

        static ((long Lines, long Events, long Malformed) Counts, List<string> Samples, List<long> EventLines) Read(FtraceReader r)
        {
            using (r)
            {
                var lines = new List<long>();
                while (r.TryRead(out TraceEvent ev))
                {
                    Assert.Equal(56, ev.BytesReq);
                    lines.Add(ev.Line);
                }
                return ((r.Lines, r.Events, r.Malformed), r.MalformedSamples.Select(m => m.ToString()).ToList(), lines);
            }
        }
    }

    [Theory]
    [InlineData(ZstdDecoder.Auto, true, ZstdDecoder.Native)]
    [InlineData(ZstdDecoder.Auto, false, ZstdDecoder.Managed)]
    [InlineData(ZstdDecoder.Native, true, ZstdDecoder.Native)]
    [InlineData(ZstdDecoder.Managed, true, ZstdDecoder.Managed)]
    [InlineData(ZstdDecoder.Managed, false, ZstdDecoder.Managed)]
    public void Auto_falls_back_to_managed_without_libzstd(ZstdDecoder requested, bool available, ZstdDecoder chosen) =>
        Assert.Equal(chosen, FtraceReader.ChooseZstd(requested, available));

    [Fact]
    public void Native_without_libzstd_is_an_error_not_a_silent_fallback() =>
        Assert.Throws<DllNotFoundException>(() => FtraceReader.ChooseZstd(ZstdDecoder.Native, nativeAvailable: false));

    [Fact]
    public void Probe_reports_why_a_library_is_unusable()
    {
        Assert.Equal((false, "libkmem-no-such-zstd.so.1 not found"), ZstdNative.Probe("libkmem-no-such-zstd.so.1"));
        Assert.Equal((false, "libc.so.6 has no ZSTD_createDStream"), ZstdNative.Probe("libc.so.6"));
    }

    [Fact]
    public void Reader_names_its_decompressor()
    {
        byte[] zst = Compress(Text(10));
        using (var managed = Reader(zst, ZstdDecoder.Managed, readAhead: true))
            Assert.Equal("ZstdSharp (managed)", managed.Decompressor);
        using (var auto = Reader(zst, ZstdDecoder.Auto, readAhead: true))
            Assert.Equal(ZstdNative.IsAvailable ? ZstdNative.Description : "ZstdSharp (managed)", auto.Decompressor);
        using var plain = new FtraceReader(new MemoryStream(Text(10)), "t.trace", TraceCompression.None);
        Assert.Equal("none", plain.Decompressor);
    }
}
