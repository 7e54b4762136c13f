using System.Diagnostics;
using Kmem.PageAlloc;
using G = Kmem.Gfp;

namespace Kmem.Tests.PageAlloc;

/// <summary>
/// Two threads (one per CPU, plus a third sharing CPU 0's pcp lists to exercise the try-lock fallback), 10^6
/// random alloc/free operations in total, mixed orders 0..10 and GFP types, every lowmem block tagged with its
/// owner and checked before its free; at the end everything is freed and drained and the buddies are whole again.
/// </summary>
public unsafe class StressTests
{
    private static readonly G[] s_types =
    [
        G.Kernel, G.Kernel, G.Kernel, G.HighUserMovable, G.HighUserMovable, G.Atomic, G.NoWait, G.NoFs,
        G.Kernel | G.Reclaimable, G.Kernel | G.Dma, G.Kernel | G.Dma32, G.Kernel | G.Comp, G.Atomic | G.Zero,
    ];

    [Fact]
    public void Threads_MillionOps_EndFullyCoalesced()
    {
        // 64 MiB: DMA 3840 + DMA32 12288 managed pages.
        using var m = Boot.Detached(Machine.Boot(new MachineConfig { RamBytes = 64L << 20, Cpus = 2 }));
        string boot = ProcBuddy(m);
        const int threads = 3;
        const int opsPerThread = 1_000_000 / threads + 1;
        var errors = new List<string>();
        long failures = 0;
        var sw = Stopwatch.StartNew();
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            try
            {
                Interlocked.Add(ref failures, Worker(m, t, opsPerThread));
            }
            catch (Exception e)
            {
                lock (errors) errors.Add($"thread {t}: {e}");
            }
        })).ToList();
        workers.ForEach(w => w.Start());
        workers.ForEach(w => w.Join());
        Assert.Empty(errors);

        m.Pages.DrainAllPages();
        Assert.Null(m.Pages.CheckInvariants());
        Assert.Equal(m.TotalRamPages, m.FreePages);
        Assert.All(m.Pages.Zones, z => Assert.Equal(z.ManagedPages, z.FreePages));
        Assert.Equal(boot, ProcBuddy(m));
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"took {sw.Elapsed}");
        // pgalloc_* and pgfree (fast-path counts summed from the pcp lists) balance.
        long allocated = m.Stat[Kmem.Diagnostics.VmItem.PgAllocDma] + m.Stat[Kmem.Diagnostics.VmItem.PgAllocDma32] + m.Stat[Kmem.Diagnostics.VmItem.PgAllocNormal];
        Assert.Equal(allocated, m.Stat[Kmem.Diagnostics.VmItem.PgFree]);
        Assert.True(allocated > 0);
    }

    private static string ProcBuddy(Machine m) => Kmem.Proc.ProcViews.Buddyinfo(m);

    private static long Worker(Machine m, int id, int ops)
    {
        using var pin = Cpu.Pin(id % 2);
        var pa = m.Pages;
        var rng = new Random(1234 + id);
        const int maxLive = 256;
        var live = new (nint Page, int Order, long Tag)[maxLive];
        int n = 0;
        long fails = 0;
        for (int i = 0; i < ops; i++)
        {
            if (n > 0 && (n == maxLive || rng.Next(2) == 0))
            {
                int k = rng.Next(n);
                var (p, order, tag) = live[k];
                Check((PageFrame*)p, order, tag, m);
                pa.FreePages((PageFrame*)p, order);
                live[k] = live[--n];
                continue;
            }
            int r = rng.Next(100);
            int ord = r < 60 ? 0 : r < 80 ? rng.Next(1, 4) : r < 97 ? rng.Next(4, 8) : rng.Next(8, 11);
            G gfp = s_types[rng.Next(s_types.Length)] | G.NoWarn;
            PageFrame* page = pa.AllocPages(gfp, ord);
            if (page == null)
            {
                fails++;
                continue;
            }
            long t = ((long)id << 48) | (uint)i;
            byte* addr = m.MemMap.PageAddress(page);
            if (addr != null)
            {
                if ((gfp & G.Zero) != 0) Assert.Equal(0L, *(long*)(addr + ((4096 << ord) - 8)));
                *(long*)addr = t;
                *(long*)(addr + ((4096 << ord) - 8)) = t;
            }
            live[n++] = ((nint)page, ord, t);
        }
        while (n > 0)
        {
            var (p, order, tag) = live[--n];
            Check((PageFrame*)p, order, tag, m);
            pa.FreePages((PageFrame*)p, order);
        }
        return fails;
    }

    private static void Check(PageFrame* page, int order, long tag, Machine m)
    {
        Assert.True(page->Has(PageFlags.AllocHead));
        Assert.Equal(order, page->Order);
        byte* addr = m.MemMap.PageAddress(page);
        if (addr == null) return;
        if (*(long*)addr != tag || *(long*)(addr + ((4096 << order) - 8)) != tag)
            Assert.Fail($"pfn {m.MemMap.PageToPfn(page):x} order {order}: tag {tag:x} overwritten ({*(long*)addr:x})");
    }
}
