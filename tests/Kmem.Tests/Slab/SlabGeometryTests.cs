using Kmem.Slab;

namespace Kmem.Tests.Slab;

public class SlabGeometryTests
{
    public static TheoryData<string> KernelCaches()
    {
        var d = new TheoryData<string>();
        foreach (var line in File.ReadLines(Path.Combine(TestData.SharedDir, "linux-proc", "sys_kernel_slab_kmalloc.txt")).Distinct())
            if (line.Trim().Length > 0) d.Add(line);
        return d;
    }

    [Theory]
    [MemberData(nameof(KernelCaches))]
    public void KmallocCacheGeometryMatchesLinuxWithTwoCpus(string line)
    {
        var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        var kv = parts.Skip(1).Select(p => p.Split('=')).ToDictionary(a => a[0], a => int.Parse(a[1]));
        using var m = SlabTestUtil.Boot(cpus: 2);
        var c = m.Slab.FindCache(parts[0]);
        Assert.NotNull(c);
        Assert.Equal(parts[0], c!.Name);
        Assert.Equal(kv["object_size"], c.ObjectSize);
        Assert.Equal(kv["slab_size"], c.Size);
        Assert.Equal(kv["order"], c.Order);
        Assert.Equal(kv["objs_per_slab"], c.ObjectsPerSlab);
        Assert.Equal(kv["align"], c.Geometry.Align);
        Assert.Equal(kv["min_partial"], c.Geometry.MinPartial);
        Assert.Equal(kv["cpu_partial"], c.Geometry.CpuPartial);
    }

    [Fact]
    public void SlabinfoColumnsMatchLinux()
    {
        using var m = SlabTestUtil.Boot();
        var ours = m.Slab.SlabInfo().Split('\n');
        var theirs = File.ReadAllLines(Path.Combine(TestData.SharedDir, "linux-proc", "slabinfo-kmalloc.txt"));
        Assert.Equal(theirs[0], ours[0]);
        Assert.Equal(theirs[1], ours[1]);
        foreach (var line in theirs.Skip(2))
        {
            string name = line[..17].Trim();
            string mine = ours.Single(l => l.StartsWith(name + " ", StringComparison.Ordinal));
            // Same columns from objsize on (the counts are the kernel's own state); same widths throughout.
            Assert.Equal(line.Length, mine.Length);
            Assert.Equal(line[31..48], mine[31..48]);
            int sd = line.IndexOf("slabdata", StringComparison.Ordinal) + 8;
            Assert.Equal(line[48..sd], mine[48..sd]);
        }
    }

    [Theory]
    [InlineData(8, 0, 0, 512)]
    [InlineData(24, 0, 0, 170)]
    [InlineData(192, 0, 0, 21)]
    [InlineData(4096, 3, 0, 8)]
    [InlineData(8192, 3, 0, 4)]
    [InlineData(16384, 3, 0, 2)]
    [InlineData(100000, 5, 0, 1)]
    public void CalculateOrderAsLinux(int size, int order, int _, int objects)
    {
        var g = SlabGeometry.Compute(size, 0, 0, false, 2)!.Value;
        Assert.Equal(order, g.Order);
        Assert.Equal(objects, g.Objects);
    }

    [Fact]
    public void FreePointerAndDebugLayoutAsCalculateSizes()
    {
        // Plain: pointer in the middle of the object.
        var plain = SlabGeometry.Compute(100, 0, 0, false, 2)!.Value;
        Assert.Equal(48, plain.Offset);
        Assert.Equal(104, plain.Size);
        // Constructor: pointer after the object.
        var ctor = SlabGeometry.Compute(100, 0, 0, true, 2)!.Value;
        Assert.Equal(104, ctor.Offset);
        Assert.Equal(112, ctor.Size);
        // HWCACHE_ALIGN: 64-byte lines halved while the object fits twice.
        Assert.Equal(32, SlabGeometry.CalculateAlignment(SlabFlags.HwcacheAlign, 0, 20));
        Assert.Equal(64, SlabGeometry.CalculateAlignment(SlabFlags.HwcacheAlign, 0, 40));
        Assert.Equal(8, SlabGeometry.CalculateAlignment(0, 0, 3));
        // RED_ZONE | POISON | STORE_USER on a 64-byte object: 64 + 8 (right red zone) = inuse 72; fp at 72;
        // +8 = 80; tracks 2*32 = 144; +8 red zone = 152; left pad 8 = 160.
        var dbg = SlabGeometry.Compute(64, 0, SlabFlags.RedZone | SlabFlags.Poison | SlabFlags.StoreUser, false, 2)!.Value;
        Assert.Equal(72, dbg.Inuse);
        Assert.Equal(72, dbg.Offset);
        Assert.Equal(8, dbg.RedLeftPad);
        Assert.Equal(160, dbg.Size);
        Assert.Equal(0, dbg.CpuPartial);
    }
}
