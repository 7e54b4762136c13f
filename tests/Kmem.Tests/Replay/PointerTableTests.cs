using Kmem.Replay;

namespace Kmem.Tests.Replay;

public class PointerTableTests
{
    [Fact]
    public void MatchesDictionaryUnderRandomInsertAndRemove()
    {
        using var t = new PointerTable<long>(4);
        var d = new Dictionary<ulong, long>();
        var rng = new Random(42);
        for (int step = 0; step < 200_000; step++)
        {
            // Small key space (many collisions, long runs) plus dense pfn-like keys and the zero key.
            ulong key = (step % 3) switch { 0 => (ulong)rng.Next(0, 5000), 1 => (ulong)rng.NextInt64() , _ => 0x18cc00UL + (ulong)rng.Next(0, 300) };
            if (rng.Next(3) == 0)
            {
                bool a = t.Remove(key, out long va);
                bool b = d.Remove(key, out long vb);
                Assert.Equal(b, a);
                Assert.Equal(vb, va);
            }
            else
            {
                t.Set(key, step);
                d[key] = step;
            }
            if (step % 20_000 == 0) t.CheckInvariants();
        }
        Assert.Equal(d.Count, t.Count);
        foreach (var (k, v) in d)
        {
            Assert.True(t.TryGetValue(k, out long got));
            Assert.Equal(v, got);
        }
        int walked = 0;
        for (int i = 0; i <= t.Capacity; i++)
            if (t.TryGetAt(i, out ulong k, out long v)) { walked++; Assert.Equal(d[k], v); }
        Assert.Equal(d.Count, walked);
        t.Clear();
        Assert.Equal(0, t.Count);
        Assert.False(t.TryGetValue(0, out _));
    }
}
