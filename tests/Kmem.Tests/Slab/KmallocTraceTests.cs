using System.Text;
using Kmem.Slab;

namespace Kmem.Tests.Slab;

public unsafe class KmallocTraceTests
{
    [Theory]
    [InlineData("forkexec.trace.zst")]
    [InlineData("fs.trace.zst")]
    public void KsizeOfKmallocEqualsBytesAllocForEveryTraceEvent(string trace)
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 256L << 20, Cpus = 2 });
        var cache = new Dictionary<long, long>();
        long events = 0, mismatches = 0;
        string? firstMismatch = null;
        using var file = File.OpenRead(TestData.TracePath(trace));
        using var z = new ZstdSharp.DecompressionStream(file);
        using var reader = new StreamReader(z, Encoding.ASCII);
        string? line;
        while ((line = reader.ReadLine()) != null)
        {
            int k = line.IndexOf(" kmalloc: ", StringComparison.Ordinal);
            if (k < 0) continue;
            long req = Field(line, " bytes_req=");
            long alloc = Field(line, " bytes_alloc=");
            events++;
            if (!cache.TryGetValue(req, out long got))
            {
                void* p = m.Slab.Kmalloc((nuint)req, Kmem.Gfp.Kernel);
                got = (long)m.Slab.Ksize(p);
                m.Slab.Kfree(p);
                cache[req] = got;
            }
            if (got != alloc)
            {
                mismatches++;
                firstMismatch ??= line;
            }
        }
        Assert.True(events > 1000, $"only {events} kmalloc events in {trace}");
        Assert.True(mismatches == 0, $"{mismatches} of {events} mismatched, first: {firstMismatch}");
        SlabTestUtil.AssertAllPagesBack(m);
    }

    private static long Field(string line, string key)
    {
        int i = line.IndexOf(key, StringComparison.Ordinal) + key.Length;
        int j = i;
        while (j < line.Length && char.IsAsciiDigit(line[j])) j++;
        return long.Parse(line.AsSpan(i, j - i));
    }
}
