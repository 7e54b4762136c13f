using Kmem.Physical;

namespace Kmem.Mempool;

/// <summary>
/// mempool_t: a reserve of <see cref="MinNr"/> preallocated elements that guarantees forward progress for paths that
/// must not fail (block I/O, writeback): mempool_alloc with a sleeping gfp never returns null; when the underlying
/// allocator and the reserve are both empty it waits for a <see cref="Free"/>.
/// </summary>
/// <remarks>
/// <para>Algorithm (mm/mempool.c): mempool_alloc first tries the allocator with the caller's gfp stripped of
/// __GFP_DIRECT_RECLAIM and __GFP_IO (plus __GFP_NOMEMALLOC | __GFP_NORETRY | __GFP_NOWARN), so that it never waits
/// for reclaim while the reserve has elements; then takes a reserved element; then retries the allocator with the
/// full gfp; then (sleeping gfp only) waits on the pool's wait queue up to 5 s (io_schedule_timeout(5*HZ)) and goes
/// round again. mempool_free refills the reserve first and wakes a waiter, and only frees to the allocator when the
/// reserve is full.</para>
/// <para>Locking: <c>_lock</c> (pool->lock, spin_lock_irqsave in Linux) protects the element array and its count; it
/// is also the wait queue. The allocator callbacks run outside it.</para>
/// </remarks>
public sealed class Mempool : IDisposable
{
    private readonly object _lock = new();
    private readonly nint[] _elements;
    private readonly Func<Gfp, nint> _alloc;
    private readonly Action<nint> _free;
    private readonly Machine _m;
    private int _curr;
    private long _waits;
    private bool _destroyed;

    public string Name { get; }
    /// <summary>min_nr: elements kept in reserve.</summary>
    public int MinNr { get; }
    /// <summary>curr_nr: elements in the reserve now.</summary>
    public int CurrNr { get { lock (_lock) return _curr; } }
    /// <summary>Times a caller slept waiting for a free element.</summary>
    public long Waits => Interlocked.Read(ref _waits);
    /// <summary>The longest one wait lasts before the caller retries (io_schedule_timeout(5*HZ)).</summary>
    public TimeSpan WaitTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>mempool_create(min_nr, alloc_fn, free_fn, pool_data): fills the reserve with GFP_KERNEL allocations.</summary>
    /// <exception cref="KmemException">the reserve could not be filled (mempool_create returns NULL).</exception>
    public Mempool(Machine machine, string name, int minNr, Func<Gfp, nint> alloc, Action<nint> free)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(minNr, 1);
        _m = machine;
        Name = name;
        MinNr = minNr;
        _alloc = alloc;
        _free = free;
        _elements = new nint[minNr];
        while (_curr < minNr)
        {
            nint e = _alloc(Gfp.Kernel);
            if (e == 0)
            {
                Dispose();
                throw new KmemException($"mempool_create: {name}: could not preallocate {minNr} elements");
            }
            _elements[_curr++] = e;
        }
    }

    /// <summary>mempool_create_page_pool(min_nr, order): elements are struct page pointers of order <paramref name="order"/>.</summary>
    public static unsafe Mempool CreatePagePool(Machine m, int minNr, int order, string name = "page_pool") =>
        new(m, name, minNr, gfp => (nint)m.Pages.AllocPages(gfp, order), e => m.Pages.FreePages((PageFrame*)e, order));

    /// <summary>mempool_create_slab_pool(min_nr, cache): elements are objects of <paramref name="cache"/>.</summary>
    public static unsafe Mempool CreateSlabPool(Machine m, int minNr, Slab.KmemCache cache) =>
        new(m, cache.Name, minNr, gfp => (nint)cache.Alloc(gfp), e => cache.Free((void*)e));

    /// <summary>mempool_create_kmalloc_pool(min_nr, size): elements are kmalloc(size) buffers.</summary>
    public static unsafe Mempool CreateKmallocPool(Machine m, int minNr, int size) =>
        new(m, $"kmalloc-{size}", minNr, gfp => (nint)m.Slab.Kmalloc((nuint)size, gfp), e => m.Slab.Kfree((void*)e));

    /// <summary>mempool_alloc.</summary>
    public nint Alloc(Gfp gfp)
    {
        Context.MightAlloc(_m, gfp);
        gfp |= Gfp.NoMemAlloc | Gfp.NoRetry | Gfp.NoWarn;
        Gfp temp = gfp & ~(Gfp.DirectReclaim | Gfp.Io);
        while (true)
        {
            if (_destroyed) throw new ObjectDisposedException(Name);
            nint e = _alloc(temp);
            if (e != 0) return e;
            lock (_lock)
            {
                if (_curr > 0) return _elements[--_curr];
                if (temp != gfp)
                {
                    temp = gfp;
                    continue;
                }
                if ((gfp & Gfp.DirectReclaim) == 0) return 0;
                Interlocked.Increment(ref _waits);
                Monitor.Wait(_lock, WaitTimeout);
            }
        }
    }

    /// <summary>mempool_free: refill the reserve (waking a waiter) or give the element back to the allocator.</summary>
    public void Free(nint element)
    {
        if (element == 0) return;
        lock (_lock)
        {
            if (_curr < MinNr)
            {
                _elements[_curr++] = element;
                Monitor.Pulse(_lock);
                return;
            }
        }
        _free(element);
    }

    /// <summary>mempool_destroy: every element must have been returned.</summary>
    public void Dispose()
    {
        lock (_lock)
        {
            if (_destroyed) return;
            _destroyed = true;
            while (_curr > 0) _free(_elements[--_curr]);
            Monitor.PulseAll(_lock);
        }
    }
}
