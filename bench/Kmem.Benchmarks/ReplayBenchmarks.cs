using BenchmarkDotNet.Attributes;
using Kmem;
using Kmem.Replay;
using Kmem.Tracing;

namespace Kmem.Benchmarks;

/// <summary>
/// kmem replay on a prefix of ../shared/traces/forkexec.trace.zst (the first <see cref="Events"/> events, or the
/// whole trace when it is shorter), in the three parts that make up its events/s:
/// <list type="bullet">
/// <item><see cref="DecompressNative"/>, <see cref="DecompressManaged"/>: the whole .zst decompressed and nothing
/// else, by the system's libzstd (the reader's default) and by ZstdSharp (its fallback). Report MB/s as the trace's
/// decompressed size (the methods' return value) / Mean.</item>
/// <item><see cref="ParseOnly"/>: FtraceReader from the .zst (decompression one chunk ahead on a second thread,
/// line parsing, string interning): the floor for everything else.</item>
/// <item><see cref="ReplayObjects"/>: reading plus ReplayEngine in Objects mode through a booted machine's slab, page
/// and vmalloc allocators, with the reader on its own thread (ParseAhead, the CLI's default).</item>
/// <item><see cref="ReplayObjectsInline"/>: the same with reading and replaying on one thread (ParseAhead off), to
/// show what the pipeline buys on this machine.</item>
/// </list>
/// Report events/s as Events / Mean. The trace is found by walking up from the benchmark binary to a folder
/// holding shared/traces (or set KMEM_TRACE to a trace file). Each invocation boots a fresh 1 GiB machine in
/// IterationSetup so the allocators start empty; the boot is not timed.
/// </summary>
[MemoryDiagnoser]
public class ReplayBenchmarks
{
    private string _path = "";
    private Machine? _m;

    [Params(200_000)]
    public int Events { get; set; }

    [GlobalSetup]
    public void Setup() => _path = Environment.GetEnvironmentVariable("KMEM_TRACE") ?? FindTrace("forkexec.trace.zst");

    [IterationSetup(Targets = [nameof(ReplayObjects), nameof(ReplayObjectsInline)])]
    public void Boot() => _m = Machine.Boot(new MachineConfig { RamBytes = 1L << 30 });

    [IterationCleanup(Targets = [nameof(ReplayObjects), nameof(ReplayObjectsInline)])]
    public void Shutdown()
    {
        _m?.Dispose();
        _m = null;
    }

    private readonly byte[] _chunk = new byte[ReadAheadStream.ChunkSize];

    [Benchmark]
    public long DecompressNative() => Drain(new NativeZstdStream(File.OpenRead(_path)));

    [Benchmark]
    public long DecompressManaged() => Drain(new ZstdSharp.DecompressionStream(File.OpenRead(_path), 1 << 17));

    // Chunk-sized reads, as the read-ahead thread makes.
    private long Drain(Stream zstd)
    {
        using (zstd)
        {
            long n = 0;
            int got;
            while ((got = zstd.ReadAtLeast(_chunk, _chunk.Length, throwOnEndOfStream: false)) > 0)
                n += got;
            return n;
        }
    }

    [Benchmark]
    public long ParseOnly()
    {
        using var r = new FtraceReader(_path, FtraceReaderOptions.Lenient);
        long n = 0;
        while (n < Events && r.TryRead(out _)) n++;
        return n;
    }

    [Benchmark]
    public long ReplayObjects() => Replay(parseAhead: true);

    [Benchmark]
    public long ReplayObjectsInline() => Replay(parseAhead: false);

    private long Replay(bool parseAhead)
    {
        using var r = new FtraceReader(_path, FtraceReaderOptions.Lenient);
        using var e = new ReplayEngine(_m!, new MachineObjects(_m!), new ReplayOptions { MaxEvents = Events, ParseAhead = parseAhead });
        e.Run(r);
        if (e.AllocatorErrors != 0) throw new InvalidOperationException($"replay had {e.AllocatorErrors} allocator errors");
        e.FreeAllLive();
        return e.Events;
    }

    private static string FindTrace(string name)
    {
        for (DirectoryInfo? d = new(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            foreach (string candidate in new[] { Path.Combine(d.FullName, "shared", "traces", name), Path.Combine(d.FullName, "..", "shared", "traces", name) })
                if (File.Exists(candidate)) return Path.GetFullPath(candidate);
        }
        throw new FileNotFoundException($"{name} not found in shared/traces above {AppContext.BaseDirectory}; set KMEM_TRACE");
    }
}
