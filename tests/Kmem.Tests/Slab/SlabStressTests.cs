using Kmem.Slab;
using G = Kmem.Gfp;

namespace Kmem.Tests.Slab;

public unsafe class SlabStressTests
{
    private static readonly int[] s_sizes = [8, 16, 24, 32, 52, 64, 72, 96, 128, 192, 256, 408, 512, 728, 1024, 2048, 4096, 6000, 16600];

    [Fact]
    public void TwoThreadsWithUniquePatternsAndCrossThreadFrees()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 256L << 20, Cpus = 2 });
        var dentry = m.Slab.CreateCache("dentry_like", 192, 0, SlabFlags.ReclaimAccount | SlabFlags.HwcacheAlign, p => *(long*)p = 0)!;
        const int Threads = 3; // more threads than CPUs: two share a CPU index
        const int Ops = 150_000;
        var handoff = new System.Collections.Concurrent.ConcurrentQueue<(nint P, int Size, long Tag)>();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        void Fill(nint p, int size, long tag)
        {
            for (int i = 0; i + 8 <= size; i += 8) *(long*)(p + i) = tag ^ i;
        }
        bool Check(nint p, int size, long tag)
        {
            for (int i = 0; i + 8 <= size; i += 8) if (*(long*)(p + i) != (tag ^ i)) return false;
            return true;
        }
        void Worker(int t)
        {
            var rng = new Random(t + 1);
            var live = new List<(nint P, int Size, long Tag, bool Cache)>();
            long serial = 0;
            for (int op = 0; op < Ops; op++)
            {
                if (live.Count < 2000 && (live.Count == 0 || rng.Next(100) < 55))
                {
                    bool cache = rng.Next(4) == 0;
                    int size = cache ? 192 : s_sizes[rng.Next(s_sizes.Length)];
                    nint p = cache ? (nint)dentry.Alloc(G.Kernel) : (nint)m.Slab.Kmalloc((nuint)size, G.Kernel);
                    if (p == 0) { errors.Enqueue("allocation failed"); return; }
                    long tag = ((long)t << 56) | (++serial << 8);
                    Fill(p, size, tag);
                    live.Add((p, size, tag, cache));
                }
                else
                {
                    int i = rng.Next(live.Count);
                    var (p, size, tag, cache) = live[i];
                    live[i] = live[^1];
                    live.RemoveAt(live.Count - 1);
                    if (!Check(p, size, tag)) errors.Enqueue($"pattern of {p:x} (size {size}) overwritten");
                    if (cache) dentry.Free((void*)p);
                    else if (rng.Next(3) == 0) handoff.Enqueue((p, size, tag)); // freed by another thread
                    else m.Slab.Kfree((void*)p);
                }
                if (handoff.TryDequeue(out var h))
                {
                    if (!Check(h.P, h.Size, h.Tag)) errors.Enqueue($"handed-off {h.P:x} overwritten");
                    m.Slab.Kfree((void*)h.P);
                }
            }
            foreach (var (p, size, tag, cache) in live)
            {
                if (!Check(p, size, tag)) errors.Enqueue($"pattern of {p:x} overwritten at the end");
                if (cache) dentry.Free((void*)p); else m.Slab.Kfree((void*)p);
            }
        }
        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() => Worker(t))).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        while (handoff.TryDequeue(out var h)) m.Slab.Kfree((void*)h.P);
        Assert.Empty(errors);
        Assert.Equal(0, dentry.LiveObjects);
        foreach (var c in m.Slab.Caches) Assert.Equal(0, c.LiveObjects);
        m.Slab.DestroyCache(dentry);
        // Boot-time caches keep nothing once shrunk: every page is back in the buddy allocator.
        SlabTestUtil.AssertAllPagesBack(m);
    }

    [Fact]
    public void NoManagedAllocationsOnAllocFreePaths()
    {
        using var m = SlabTestUtil.Boot();
        var c = m.Slab.CreateCache("gcfree", 64, 0, SlabFlags.NoMerge, p => { })!;
        nint* ring = stackalloc nint[512];
        int[] sizes = [8, 64, 100, 500, 3000, 8192, 20000];
        void Run(int n)
        {
            for (int i = 0; i < n; i++)
            {
                int slot = i & 511;
                if (ring[slot] != 0) m.Slab.Kfree((void*)ring[slot]);
                ring[slot] = (nint)m.Slab.Kmalloc((nuint)sizes[i % sizes.Length], G.Kernel);
                void* o = c.Alloc(G.Kernel);
                c.Free(o);
            }
            Span<nint> bulk = stackalloc nint[16];
            for (int i = 0; i < n / 16; i++)
            {
                c.AllocBulk(G.Kernel, bulk);
                c.FreeBulk(bulk);
            }
        }
        Run(10_000); // warm up: slabs, JIT
        long before = GC.GetAllocatedBytesForCurrentThread();
        Run(1_000_000);
        long after = GC.GetAllocatedBytesForCurrentThread();
        Assert.Equal(0, after - before);
        for (int i = 0; i < 512; i++) m.Slab.Kfree((void*)ring[i]);
    }
}
