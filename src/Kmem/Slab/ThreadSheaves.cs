using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kmem.Physical;

namespace Kmem.Slab;

/// <summary>
/// A thread sheaf: one thread's array of free objects of one cache (Linux 6.18's <c>struct slab_sheaf</c>, owned by a
/// thread instead of a CPU). 64-byte aligned, <see cref="ThreadSheaves.MaxCapacity"/> slots, inline in its thread's
/// <see cref="SheafTable"/>.
/// </summary>
/// <remarks>
/// Ownership (see <see cref="SlabAllocator"/> design, section 5): only the owning thread changes <see cref="Size"/>
/// and <see cref="Objects"/>, and only between <c>Busy = 1</c> and <c>Busy = 0</c> after reading a
/// <see cref="Size"/> without <see cref="StopBit"/>. A drainer sets that bit, issues a process-wide barrier, waits for
/// <c>Busy == 0</c> and checks the bit survived (an owner's window that began before the bit was set ends with a
/// <see cref="Close"/> that writes the size without it); then it owns the sheaf until it writes Size.
/// </remarks>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal unsafe struct Sheaf
{
    /// <summary>
    /// Set in <see cref="Size"/> while a drainer claims or owns the sheaf. In the sign bit, one unsigned compare of
    /// the size with the capacity rejects a stopped sheaf together with an empty or a full one, so a fast path reads
    /// one word, not a size and a stop flag.
    /// </summary>
    public const int StopBit = int.MinValue;

    /// <summary>Objects held (Objects[0..Size) are free objects of the slot's cache, link word = encoded null), | <see cref="StopBit"/>.</summary>
    [FieldOffset(0)] public int Size;
    /// <summary>1 while the owner is inside a sheaf window (no locks, no calls, no waiting inside one).</summary>
    [FieldOffset(4)] public int Busy;
    /// <summary>Drainer-private (under the registry lock): 1 when this drain set <see cref="StopBit"/> here.</summary>
    [FieldOffset(8)] public int Marked;

    /// <summary>
    /// Close the owner's window and publish the new size in one 8-byte store (Size at 0, Busy at 4, so the high half
    /// writes Busy = 0): one store instead of two on each fast path, and a drainer that sees Busy == 0 sees the size
    /// written with it. A later 4-byte load of Size is still served by store forwarding (it starts at the same byte).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Close(int size) => Volatile.Write(ref Unsafe.As<int, long>(ref Size), (uint)size);

    /// <summary>The object array, right after the 16-byte header.</summary>
    public nint* Objects
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (nint*)Unsafe.AsPointer(ref this) + 2;
    }
}

/// <summary>
/// One thread's sheaves: a 64-byte header, then one <see cref="Sheaf"/> per global sheaf slot, inline at
/// <see cref="ThreadSheaves.OffsetOf"/>(slot). An anonymous mapping of <see cref="ThreadSheaves.TableBytes"/>
/// (640 KiB of address space); only the pages of the slots a thread uses are ever written, so it costs a few pages
/// of memory. A fast path finds its sheaf by adding the cache's offset to the table address: no load, no null test.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal unsafe struct SheafTable
{
    /// <summary>Managed thread id of the owner (for reports; 0 once the thread has exited).</summary>
    [FieldOffset(0)] public int ThreadId;

    /// <summary>The sheaf at <paramref name="offset"/> (an <see cref="ThreadSheaves.OffsetOf"/> value).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Sheaf* At(nint offset) => (Sheaf*)((byte*)Unsafe.AsPointer(ref this) + offset);
}

/// <summary>
/// The registry of thread sheaves: global sheaf slots (one per cache with sheaves, process-wide because several
/// machines may live in one process), every thread's <see cref="SheafTable"/>, draining, and thread-exit flush.
/// </summary>
/// <remarks>
/// Locking: <c>s_lock</c> (global; after slab_mutex, before every slab lock) protects s_slots, s_tables and every
/// drain. A thread's table pointer is published in a [ThreadStatic] once, by its owner, under s_lock. Slot 0's sheaf
/// is stopped for good (<see cref="Sheaf.StopBit"/> set when the table is made, never drained): it is the slot of
/// caches without sheaves, whose fast paths thus fail into their slow paths without a test of their own. Thread
/// exit: the table's managed owner object (<see cref="TableOwner"/>) is rooted only by the thread's [ThreadStatic];
/// once the thread is gone a GC finalizes it, and the finalizer returns the objects to their caches through the CPU
/// layer and unmaps the table.
/// </remarks>
internal static unsafe class ThreadSheaves
{
    /// <summary>
    /// Slots per sheaf. A guess, as Linux's sheaf_capacity is a per-cache choice (maple tree nodes use 32): 32 objects
    /// keeps the refill/flush batch (half a sheaf, 16) at the size kmem_cache_alloc_bulk callers use.
    /// </summary>
    public const int MaxCapacity = 32;

    /// <summary>
    /// Sheaf slots in the process, slot 0 included (the stopped slot of caches without sheaves). Slots are
    /// process-wide because several machines may live in one process.
    /// </summary>
    public const int MaxSlots = 2048;
    private const int SheafBytes = 16 + MaxCapacity * 8 + 48; // header + slots, rounded to 64-byte lines (320)
    private const int HeaderBytes = 64;

    /// <summary>Bytes of a thread's table mapping (the header and every slot's sheaf).</summary>
    public const int TableBytes = HeaderBytes + MaxSlots * SheafBytes;

    private static readonly Lock s_lock = new();
    private static readonly KmemCache?[] s_slots = new KmemCache?[MaxSlots];
    private static readonly List<nint> s_tables = new();
    private static int s_slotsEnd = 1; // one past the highest slot ever registered (loops over a table stop there)

    [ThreadStatic] private static SheafTable* t_table;
    [ThreadStatic] private static TableOwner? t_owner;

    /// <summary>Offset of <paramref name="slot"/>'s sheaf from its table's start (what a cache and its slabs keep).</summary>
    public static int OffsetOf(int slot)
    {
        Debug.Assert((uint)slot < MaxSlots);
        return HeaderBytes + slot * SheafBytes;
    }

    /// <summary>
    /// The calling thread's table, or null before its first slow path (the [ThreadStatic] load alone: on Linux a
    /// call into the TLS resolver, which clobbers the caller-saved registers, so the free paths make it first, before
    /// their checks).
    /// </summary>
    public static SheafTable* Table
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_table;
    }

    /// <summary>The calling thread's sheaf at <paramref name="offset"/>, or null when the thread has no table yet.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Sheaf* Current(nint offset)
    {
        SheafTable* t = t_table;
        return t != null ? t->At(offset) : null;
    }

    /// <summary>The calling thread's sheaf at <paramref name="offset"/>, its table made (and the thread registered) if needed.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Sheaf* GetOrCreate(nint offset)
    {
        SheafTable* t = t_table;
        if (t != null) return t->At(offset);
        lock (s_lock)
        {
            nint p = Libc.mmap(0, TableBytes, Libc.PROT_READ | Libc.PROT_WRITE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS, -1, 0);
            if (p == Libc.MAP_FAILED)
                throw new OutOfMemoryException($"kmem: no address space for a thread's sheaf table ({TableBytes} bytes, errno {Marshal.GetLastPInvokeError()})");
            t = (SheafTable*)p; // zeroed by the kernel: every sheaf empty, no stop bit
            t->ThreadId = Environment.CurrentManagedThreadId;
            t->At(OffsetOf(0))->Size = Sheaf.StopBit;
            s_tables.Add(p);
            (t_owner ??= new TableOwner()).Table = t;
            t_table = t;
            return t->At(offset);
        }
    }

    /// <summary>A free global slot for <paramref name="cache"/>, or 0 (no sheaves) when all are taken.</summary>
    public static int Register(KmemCache cache)
    {
        lock (s_lock)
        {
            int slot = Array.IndexOf(s_slots, null, 1);
            if (slot < 0) return 0;
            s_slots[slot] = cache;
            s_slotsEnd = Math.Max(s_slotsEnd, slot + 1);
            return slot;
        }
    }

    /// <summary>Release a slot: every thread's sheaf for it is emptied (objects dropped: the cache is gone).</summary>
    public static void Unregister(int slot)
    {
        Debug.Assert(slot > 0);
        lock (s_lock)
        {
            DrainLocked(slot, null);
            s_slots[slot] = null;
        }
    }

    /// <summary>
    /// Take every object out of every thread's sheaf for <paramref name="slot"/> and hand them to
    /// <paramref name="cache"/>'s CPU layer (null: drop them). The owners keep their (empty) sheaves.
    /// </summary>
    public static void Drain(int slot, KmemCache? cache)
    {
        lock (s_lock) DrainLocked(slot, cache);
    }

    private static void DrainLocked(int slot, KmemCache? cache)
    {
        int offset = OffsetOf(slot);
        int marked = 0;
        foreach (nint tp in s_tables)
        {
            Sheaf* sh = ((SheafTable*)tp)->At(offset);
            // An empty sheaf has nothing to give; a push racing with this read counts as coming after the drain.
            // (Reading also leaves the untouched pages of other slots unwritten.)
            if (Volatile.Read(ref sh->Size) == 0) continue;
            sh->Marked = 1; // 0 again before this drain ends
            Interlocked.Or(ref sh->Size, Sheaf.StopBit);
            marked++;
        }
        if (marked == 0) return;
        // Dekker without a fence on the owner's side: after this, every owner either has its Busy = 1 visible here or
        // reads the stop bit (sys_membarrier / FlushProcessWriteBuffers serialises every running thread).
        Interlocked.MemoryBarrierProcessWide();
        foreach (nint tp in s_tables)
        {
            Sheaf* sh = ((SheafTable*)tp)->At(offset);
            if (sh->Marked == 0) continue;
            sh->Marked = 0;
            int size = Claim(sh);
            if (size < 0) continue;
            if (size != 0 && cache != null) cache.FlushToCpu(sh->Objects, size);
            Volatile.Write(ref sh->Size, 0); // clears the stop bit: the owner's windows work again
        }
    }

    /// <summary>
    /// Finish claiming a sheaf whose stop bit this drain set before its barrier: the objects it holds, the sheaf now
    /// the drainer's until it writes Size; or -1 when the owner emptied it meanwhile (nothing to take, not claimed).
    /// </summary>
    /// <remarks>
    /// A window the owner opened before the bit was set may still be open; once Busy reads 0 it has closed, and its
    /// <see cref="Sheaf.Close"/> wrote the size without the bit. Then the bit is set again behind a new barrier, which
    /// only a window open at that moment can undo in turn: each retry needs the owner to be inside its few-nanosecond
    /// window just when the bit is set, so a drain ends after a retry or two even against a thread allocating flat out.
    /// </remarks>
    private static int Claim(Sheaf* sh)
    {
        while (true)
        {
            if (Volatile.Read(ref sh->Busy) != 0)
            {
                var spin = new SpinWait();
                do spin.SpinOnce(); while (Volatile.Read(ref sh->Busy) != 0);
            }
            int size = Volatile.Read(ref sh->Size);
            if ((size & Sheaf.StopBit) != 0) return size & ~Sheaf.StopBit;
            if (size == 0) return -1;
            ClaimRetries++;
            Interlocked.Or(ref sh->Size, Sheaf.StopBit);
            Interlocked.MemoryBarrierProcessWide();
        }
    }

    /// <summary>Times a drain found its stop bit undone by an owner's closing window and set it again (under s_lock).</summary>
    internal static long ClaimRetries { get; private set; }

    /// <summary>Objects held in all threads' sheaves for <paramref name="slot"/> (exact when no alloc/free is running).</summary>
    public static long Held(int slot)
    {
        int offset = OffsetOf(slot);
        long n = 0;
        lock (s_lock)
            foreach (nint tp in s_tables)
                n += Volatile.Read(ref ((SheafTable*)tp)->At(offset)->Size) & ~Sheaf.StopBit;
        return n;
    }

    /// <summary>Threads with a sheaf table (live threads plus exited ones not yet finalized).</summary>
    public static int RegisteredThreads
    {
        get { lock (s_lock) return s_tables.Count; }
    }

    /// <summary>Does <paramref name="table"/> belong to the calling thread? (Debug checks.)</summary>
    internal static bool IsCurrentThreads(SheafTable* table) => table == t_table;

    /// <summary>Thread exit: give every sheaf's objects back to its cache and unmap the table.</summary>
    private static void ThreadExited(SheafTable* t)
    {
        lock (s_lock)
        {
            Debug.Assert(!IsCurrentThreads(t));
            s_tables.Remove((nint)t);
            for (int slot = 1; slot < s_slotsEnd; slot++)
            {
                Sheaf* sh = t->At(OffsetOf(slot));
                // The owner is gone: no window can be open, and a drain (which takes s_lock) cannot be half done.
                int size = sh->Size & ~Sheaf.StopBit;
                if (size != 0 && s_slots[slot] is { } cache) cache.FlushToCpu(sh->Objects, size);
            }
            Libc.munmap((nint)t, TableBytes);
        }
    }

    /// <summary>Rooted only by its thread's [ThreadStatic]: finalized after the thread exits.</summary>
    private sealed class TableOwner
    {
        /// <summary>The thread's table.</summary>
        public SheafTable* Table;

        ~TableOwner()
        {
            SheafTable* t;
            lock (s_lock) t = Table;
            if (t != null) ThreadExited(t);
        }
    }
}
