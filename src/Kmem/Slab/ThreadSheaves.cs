using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Slab;

/// <summary>
/// A thread sheaf: one thread's array of free objects of one cache (Linux 6.18's <c>struct slab_sheaf</c>, owned by a
/// thread instead of a CPU). Native, 64-byte aligned, <see cref="ThreadSheaves.MaxCapacity"/> slots.
/// </summary>
/// <remarks>
/// Ownership (see <see cref="SlabAllocator"/> design, section 5): only the owning thread changes <see cref="Size"/>
/// and <see cref="Objects"/>, and only between <c>Busy = 1</c> and <c>Busy = 0</c> after reading <c>Stop == 0</c>.
/// A drainer sets <see cref="Stop"/>, issues a process-wide barrier, waits for <c>Busy == 0</c>, then owns the sheaf
/// until it clears <see cref="Stop"/>.
/// </remarks>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal unsafe struct Sheaf
{
    /// <summary>Objects held; Objects[0..Size) are free objects of the slot's cache (link word = encoded null).</summary>
    [FieldOffset(0)] public int Size;
    /// <summary>1 while the owner is inside a sheaf window (no locks, no calls, no waiting inside one).</summary>
    [FieldOffset(4)] public int Busy;
    /// <summary>1 while a drainer owns the sheaf; the owner then takes the CPU path.</summary>
    [FieldOffset(8)] public int Stop;

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
/// One thread's sheaves, indexed by a cache's global sheaf slot (native; <c>Sheaves[MaxSlots]</c> follows the header).
/// Every table has <see cref="ThreadSheaves.MaxSlots"/> entries, so a fast path indexes it without a bounds check.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 16)]
internal unsafe struct SheafTable
{
    /// <summary>Managed thread id of the owner (for reports; 0 once the thread has exited).</summary>
    [FieldOffset(0)] public int ThreadId;

    public Sheaf** Sheaves
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => (Sheaf**)((byte*)Unsafe.AsPointer(ref this) + 16);
    }
}

/// <summary>
/// The registry of thread sheaves: global sheaf slots (one per cache with sheaves, process-wide because several
/// machines may live in one process), every thread's <see cref="SheafTable"/>, draining, and thread-exit flush.
/// </summary>
/// <remarks>
/// Locking: <c>s_lock</c> (global; after slab_mutex, before every slab lock) protects s_slots, s_tables, the growth of
/// a table and every drain. A thread's table pointer is published in a [ThreadStatic] and only replaced by its owner,
/// under s_lock. Thread exit: the table's managed owner object (<see cref="TableOwner"/>) is rooted only by the
/// thread's [ThreadStatic]; once the thread is gone a GC finalizes it, and the finalizer returns the objects to their
/// caches through the CPU layer and frees the table.
/// </remarks>
internal static unsafe class ThreadSheaves
{
    /// <summary>
    /// Slots per sheaf. A guess, as Linux's sheaf_capacity is a per-cache choice (maple tree nodes use 32): 32 objects
    /// keeps the refill/flush batch (half a sheaf, 16) at the size kmem_cache_alloc_bulk callers use.
    /// </summary>
    public const int MaxCapacity = 32;

    /// <summary>
    /// Sheaf slots in the process (every thread's table has this many entries: 16 KiB). Slot 0 never has a sheaf:
    /// it is the slot of caches without sheaves (debug caches, or every slot taken), so the fast paths need no
    /// separate test for them. Slots are process-wide because several machines may live in one process.
    /// </summary>
    public const int MaxSlots = 2048;
    private const int SheafBytes = 16 + MaxCapacity * 8 + 48; // header + slots, rounded to 64-byte lines (320)

    private static readonly Lock s_lock = new();
    private static readonly KmemCache?[] s_slots = new KmemCache?[MaxSlots];
    private static readonly List<nint> s_tables = new();

    [ThreadStatic] private static SheafTable* t_table;
    [ThreadStatic] private static TableOwner? t_owner;

    /// <summary>The calling thread's sheaf for <paramref name="slot"/>, or null when it has none yet.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Sheaf* Current(int slot) => In(t_table, slot);

    /// <summary>
    /// The calling thread's table, or null (the [ThreadStatic] load alone: on Linux a call into the TLS resolver,
    /// which clobbers the caller-saved registers, so the free paths make it first, before their checks).
    /// </summary>
    public static SheafTable* Table
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_table;
    }

    /// <summary>
    /// The sheaf for <paramref name="slot"/> (0 &lt;= slot &lt; <see cref="MaxSlots"/>, as every cache's slot is) in
    /// <paramref name="t"/> (the calling thread's <see cref="Table"/>), or null.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Sheaf* In(SheafTable* t, int slot)
    {
        Debug.Assert((uint)slot < MaxSlots);
        return t != null ? t->Sheaves[(uint)slot] : null;
    }

    /// <summary>The calling thread's sheaf for <paramref name="slot"/> (not 0), created (and the thread registered) if needed.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static Sheaf* GetOrCreate(int slot)
    {
        Debug.Assert(slot > 0 && slot < MaxSlots);
        Sheaf* sh = Current(slot);
        if (sh != null) return sh;
        lock (s_lock)
        {
            SheafTable* t = t_table;
            if (t == null)
            {
                t = (SheafTable*)NativeMemory.AllocZeroed((nuint)(16 + MaxSlots * sizeof(Sheaf*)));
                t->ThreadId = Environment.CurrentManagedThreadId;
                s_tables.Add((nint)t);
                t_table = t;
                (t_owner ??= new TableOwner()).Table = t;
            }
            sh = (Sheaf*)NativeMemory.AlignedAlloc(SheafBytes, 64);
            NativeMemory.Clear(sh, SheafBytes);
            t->Sheaves[slot] = sh;
            return sh;
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
        int n = 0;
        foreach (nint tp in s_tables)
        {
            var t = (SheafTable*)tp;
            if (t->Sheaves[slot] != null)
            {
                Volatile.Write(ref t->Sheaves[slot]->Stop, 1);
                n++;
            }
        }
        if (n == 0) return;
        // Dekker without a fence on the owner's side: after this, every owner either has its Busy = 1 visible here or
        // will read Stop == 1 (sys_membarrier / FlushProcessWriteBuffers serialises every running thread).
        Interlocked.MemoryBarrierProcessWide();
        foreach (nint tp in s_tables)
        {
            var t = (SheafTable*)tp;
            if (t->Sheaves[slot] == null) continue;
            Sheaf* sh = t->Sheaves[slot];
            if (Volatile.Read(ref sh->Busy) != 0)
            {
                var spin = new SpinWait();
                do spin.SpinOnce(); while (Volatile.Read(ref sh->Busy) != 0);
            }
            int size = sh->Size;
            sh->Size = 0;
            if (size != 0 && cache != null) cache.FlushToCpu(sh->Objects, size);
            Volatile.Write(ref sh->Stop, 0);
        }
    }

    /// <summary>Objects held in all threads' sheaves for <paramref name="slot"/> (exact when no alloc/free is running).</summary>
    public static long Held(int slot)
    {
        long n = 0;
        lock (s_lock)
            foreach (nint tp in s_tables)
            {
                var t = (SheafTable*)tp;
                if (t->Sheaves[slot] != null) n += Volatile.Read(ref t->Sheaves[slot]->Size);
            }
        return n;
    }

    /// <summary>Threads with a sheaf table (live threads plus exited ones not yet finalized).</summary>
    public static int RegisteredThreads
    {
        get { lock (s_lock) return s_tables.Count; }
    }

    /// <summary>Does <paramref name="table"/> belong to the calling thread? (Debug checks.)</summary>
    internal static bool IsCurrentThreads(SheafTable* table) => table == t_table;

    /// <summary>Thread exit: give every sheaf's objects back to its cache and free the table.</summary>
    private static void ThreadExited(SheafTable* t)
    {
        lock (s_lock)
        {
            Debug.Assert(!IsCurrentThreads(t));
            s_tables.Remove((nint)t);
            for (int slot = 0; slot < MaxSlots; slot++)
            {
                Sheaf* sh = t->Sheaves[slot];
                if (sh == null) continue;
                // The owner is gone: no window can be open. A live cache in the slot owns the objects.
                if (sh->Size != 0 && s_slots[slot] is { } cache) cache.FlushToCpu(sh->Objects, sh->Size);
                NativeMemory.AlignedFree(sh);
            }
            NativeMemory.Free(t);
        }
    }

    /// <summary>Rooted only by its thread's [ThreadStatic]: finalized after the thread exits.</summary>
    private sealed class TableOwner
    {
        /// <summary>The thread's current table (replaced under s_lock when it grows).</summary>
        public SheafTable* Table;

        ~TableOwner()
        {
            SheafTable* t;
            lock (s_lock) t = Table;
            if (t != null) ThreadExited(t);
        }
    }
}
