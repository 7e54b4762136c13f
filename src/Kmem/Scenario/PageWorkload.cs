using Kmem.PageAlloc;

namespace Kmem.Scenario;

/// <summary>Counts per GFP type for a workload's summary.</summary>
public sealed class GfpTally
{
    public long Allocations;
    public long Failures;
    public long Pages;
}

/// <summary>
/// A page-allocation workload of mixed orders and GFP types from several threads (one per CPU, pinned), holding a
/// bounded set of live blocks and freeing at random, then freeing everything. Used by <c>kmem run</c> and tests.
/// </summary>
public sealed unsafe class PageWorkload
{
    /// <summary>The GFP types the workload draws from, with weights: ordinary kernel allocations dominate.</summary>
    public static readonly (string Name, Gfp Gfp, int Weight)[] Types =
    [
        ("GFP_KERNEL", Gfp.Kernel, 40),
        ("GFP_HIGHUSER_MOVABLE", Gfp.HighUserMovable, 25),
        ("GFP_ATOMIC", Gfp.Atomic, 12),
        ("GFP_NOWAIT", Gfp.NoWait, 8),
        ("GFP_NOFS", Gfp.NoFs, 6),
        ("GFP_KERNEL|__GFP_RECLAIMABLE", Gfp.Kernel | Gfp.Reclaimable, 5),
        ("GFP_DMA", Gfp.Kernel | Gfp.Dma, 2),
        ("GFP_DMA32", Gfp.Kernel | Gfp.Dma32, 2),
    ];

    public long OperationsPerThread { get; init; } = 200_000;
    /// <summary>Live pages each thread may hold, as a fraction of managed memory divided among threads.</summary>
    public double LiveFraction { get; init; } = 0.85;
    public int Seed { get; init; } = 1;
    public Dictionary<string, GfpTally> Tally { get; } = Types.ToDictionary(t => t.Name, _ => new GfpTally());
    public long PeakLivePages;
    private long _live;
    private long _done;

    /// <summary>Operations finished so far (for a progress bar).</summary>
    public long Done => Interlocked.Read(ref _done);
    public long Total(int threads) => OperationsPerThread * threads;

    /// <summary>Called once, after every thread reached its peak and before teardown (e.g. to print buddyinfo under load).</summary>
    public Action? AtPeak { get; init; }

    public void Run(Machine m, int threads)
    {
        using var barrier = new Barrier(threads, _ => AtPeak?.Invoke());
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() => Worker(m, id, threads, barrier)) { Name = $"kworker/{id}", IsBackground = true };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        m.Pages.DrainAllPages();
    }

    private void Worker(Machine m, int id, int threads, Barrier barrier)
    {
        using var pin = Cpu.Pin(id % m.CpuCount);
        var rng = new Random(Seed * 7919 + id);
        var pa = m.Pages;
        long budget = (long)(m.TotalRamPages * LiveFraction / threads);
        int cap = 1 << 16;
        var live = new (nint Page, int Order)[cap];
        int count = 0;
        long livePages = 0;
        int totalWeight = Types.Sum(t => t.Weight);
        var tallies = Types.Select(t => Tally[t.Name]).ToArray();
        for (long op = 0; op < OperationsPerThread; op++)
        {
            bool alloc = count == 0 || (count < cap && livePages < budget && rng.Next(100) < 55);
            if (alloc)
            {
                int w = rng.Next(totalWeight), ti = 0;
                while (w >= Types[ti].Weight) w -= Types[ti++].Weight;
                int order = PickOrder(rng);
                PageFrame* page = pa.AllocPages(Types[ti].Gfp | Gfp.NoWarn, order);
                Interlocked.Increment(ref tallies[ti].Allocations);
                if (page == null)
                {
                    Interlocked.Increment(ref tallies[ti].Failures);
                }
                else
                {
                    Interlocked.Add(ref tallies[ti].Pages, 1L << order);
                    live[count++] = ((nint)page, order);
                    livePages += 1L << order;
                    long all = Interlocked.Add(ref _live, 1L << order);
                    long peak;
                    while (all > (peak = Interlocked.Read(ref PeakLivePages)) && Interlocked.CompareExchange(ref PeakLivePages, all, peak) != peak) { }
                }
            }
            else
            {
                int i = rng.Next(count);
                var (page, order) = live[i];
                live[i] = live[--count];
                pa.FreePages((PageFrame*)page, order);
                livePages -= 1L << order;
                Interlocked.Add(ref _live, -(1L << order));
            }
            if ((op & 1023) == 0) Interlocked.Add(ref _done, 1024);
        }
        barrier.SignalAndWait();
        while (count > 0)
        {
            var (page, order) = live[--count];
            pa.FreePages((PageFrame*)page, order);
            Interlocked.Add(ref _live, -(1L << order));
        }
    }

    /// <summary>Mostly order 0, geometrically fewer of each higher order, up to MAX_PAGE_ORDER.</summary>
    private static int PickOrder(Random rng)
    {
        int order = 0;
        while (order < Zone.MaxOrder && rng.Next(100) < 35) order++;
        return order;
    }
}
