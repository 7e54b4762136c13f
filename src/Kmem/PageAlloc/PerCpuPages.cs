using System.Runtime.CompilerServices;

namespace Kmem.PageAlloc;

/// <summary>
/// One CPU's page cache for one zone (Linux's <c>struct per_cpu_pages</c>): LIFO lists of free blocks of order
/// 0..PAGE_ALLOC_COSTLY_ORDER per PCP migratetype, refilled from and drained to the buddy lists in batches so that
/// most allocations and frees never take the zone lock.
/// </summary>
/// <remarks>
/// Locking: <see cref="TryLock"/> is a try-lock, as Linux's pcp_spin_trylock. A thread that finds it taken (another
/// thread running on the same CPU number, or a drain) does not wait: it goes to the zone's buddy lists instead.
/// Under the lock: <see cref="Count"/>, the list heads and tails, and the Next/Prev/OnPcp fields of the pages on them.
/// High and batch are written only at boot (kmem does not retune pcp->high dynamically, see <see cref="Zone"/>).
/// </remarks>
public sealed class PerCpuPages
{
    /// <summary>PAGE_ALLOC_COSTLY_ORDER: orders above it are never cached per CPU.</summary>
    public const int CostlyOrder = 3;
    /// <summary>MIGRATE_PCPTYPES.</summary>
    public const int PcpTypes = 3;
    public const int Lists = (CostlyOrder + 1) * PcpTypes;

    // Hot fields first and together: the lock word, the counts the fast paths test, and the list heads (inline,
    // not a separate array object, so a hit touches this object's first two cache lines and one page descriptor).
    private int _lock;
    /// <summary>Pages (not blocks) on all lists.</summary>
    public int Count;
    public int High;
    public int Batch;
    /// <summary>Pages handed out / taken back through this pcp's fast paths (pgalloc_*, pgfree), summed into <see cref="Diagnostics.VmStat"/> on read.</summary>
    internal long StatAlloc;
    internal long StatFree;
    internal PcpLists Head;
    internal PcpLists Tail;
    public int HighMin;
    public int HighMax;
    public int Cpu { get; }

    /// <summary>One int per pcp list (PFN of the first/last block, or <see cref="PageFrame.None"/>), inline in the object.</summary>
    [InlineArray(Lists)]
    internal struct PcpLists
    {
        private int _e;
    }

    public PerCpuPages(int cpu)
    {
        Cpu = cpu;
        ((Span<int>)Head).Fill(PageFrame.None);
        ((Span<int>)Tail).Fill(PageFrame.None);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int ListIndex(int order, MigrateType mt) => order * PcpTypes + (int)mt;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryLock() => Interlocked.CompareExchange(ref _lock, 1, 0) == 0;

    /// <summary>Wait for the lock (drains only: they must not skip a CPU).</summary>
    public void Lock()
    {
        var spin = new SpinWait();
        while (!TryLock()) spin.SpinOnce();
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Unlock() => Volatile.Write(ref _lock, 0);

    /// <summary>Blocks on one list (for views and tests; take the lock or accept a racy answer).</summary>
    public int ListLength(int list, Physical.MemMap map)
    {
        int n = 0;
        unsafe
        {
            for (int p = Head[list]; p != PageFrame.None; p = map.PfnToPage(p)->Next) n++;
        }
        return n;
    }
}
