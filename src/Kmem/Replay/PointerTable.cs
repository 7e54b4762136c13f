using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Replay;

/*
 * PointerTable<T>: the replay's trace-identity → allocation table (trace ptr, pfn or va_start → what kmem returned).
 *
 * 1. Layout. One native array of (key, value) slots, a power of two long, open addressing with linear probing. Key 0
 *    marks an empty slot; a real key 0 (a pfn 0, never a live slab ptr: kfree(NULL) is not inserted) lives in a
 *    side slot (_hasZero/_zeroValue), so every probe compares against one sentinel.
 * 2. Hash. Fibonacci hashing (key * 2^64/φ, top bits): trace pointers are %p-hashed (already random) and pfns are
 *    dense runs; the multiply spreads both. No tombstones: Remove shifts the following run back (Knuth's algorithm
 *    R for linear probing), so probe lengths depend only on the load, never on the history.
 * 3. Load. Grows ×2 at 1/2 full: expected probes ≈ 1.5 for a hit, 2.5 for a miss. Memory is bounded by the peak live
 *    set (×2 to ×4 slots), not the trace length, and lives outside the GC heap (no card marking, no GC scanning).
 * 4. Iteration (TryGetAt over 0..Capacity) walks slots in memory order; the table must not change meanwhile.
 * Single-threaded, like the engine. Replaces Dictionary&lt;ulong, T&gt; on the replay's per-event path: no comparer
 * call, no bucket/entry double indirection, no free-list bookkeeping.
 */

/// <summary>Open-addressing ulong → <typeparamref name="T"/> map in native memory. See the notes in this file.</summary>
internal sealed unsafe class PointerTable<T> : IDisposable where T : unmanaged
{
    [StructLayout(LayoutKind.Sequential)]
    private struct Slot
    {
        public ulong Key;   // 0: empty
        public T Value;
    }

    private Slot* _slots;
    private int _mask;       // capacity - 1
    private int _shift;      // 64 - log2(capacity)
    private int _count;      // keys in _slots (the zero key not included)
    private bool _hasZero;
    private T _zeroValue;

    /// <summary>A table sized for about <paramref name="expected"/> keys before it grows.</summary>
    public PointerTable(int expected = 1 << 12)
    {
        int cap = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(16, expected * 2));
        Allocate(cap);
    }

    /// <summary>Keys stored.</summary>
    public int Count => _count + (_hasZero ? 1 : 0);

    /// <summary>Slots allocated (a power of two).</summary>
    public int Capacity => _mask + 1;

    private void Allocate(int cap)
    {
        _slots = (Slot*)NativeMemory.AllocZeroed((nuint)cap, (nuint)sizeof(Slot));
        _mask = cap - 1;
        _shift = 64 - BitOperations.Log2((uint)cap);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int Home(ulong key) => (int)((key * 0x9E3779B97F4A7C15UL) >> _shift);

    /// <summary>Inserts or overwrites <paramref name="key"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Set(ulong key, in T value)
    {
        if (key == 0) { _hasZero = true; _zeroValue = value; return; }
        int i = Home(key);
        while (true)
        {
            Slot* s = _slots + i;
            if (s->Key == key) { s->Value = value; return; }
            if (s->Key == 0)
            {
                s->Key = key;
                s->Value = value;
                if (++_count * 2 > Capacity) Grow();
                return;
            }
            i = (i + 1) & _mask;
        }
    }

    /// <summary>
    /// Starts loading the slot where a lookup of <paramref name="key"/> begins (a hint: nothing changes). The table
    /// is megabytes and keys are random, so a probe is a cache miss; the replay issues this a few events ahead.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Prefetch(ulong key)
    {
        if (System.Runtime.Intrinsics.X86.Sse.IsSupported)
            System.Runtime.Intrinsics.X86.Sse.Prefetch0(_slots + Home(key));
    }

    /// <summary>Looks <paramref name="key"/> up.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetValue(ulong key, out T value)
    {
        if (key == 0) { value = _zeroValue; return _hasZero; }
        int i = Home(key);
        while (true)
        {
            Slot* s = _slots + i;
            if (s->Key == key) { value = s->Value; return true; }
            if (s->Key == 0) { value = default; return false; }
            i = (i + 1) & _mask;
        }
    }

    /// <summary>Removes <paramref name="key"/>, returning its value. False (and default) when absent.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Remove(ulong key, out T value)
    {
        if (key == 0)
        {
            value = _zeroValue;
            bool had = _hasZero;
            _hasZero = false;
            _zeroValue = default;
            return had;
        }
        int i = Home(key);
        while (true)
        {
            Slot* s = _slots + i;
            if (s->Key == key)
            {
                value = s->Value;
                RemoveAt(i);
                return true;
            }
            if (s->Key == 0) { value = default; return false; }
            i = (i + 1) & _mask;
        }
    }

    // Backward-shift deletion: walk the run after the hole; an entry whose home is not cyclically within
    // (hole, j] can move into the hole (its probe path passes it), which opens a new hole at j.
    private void RemoveAt(int hole)
    {
        _count--;
        int j = hole;
        while (true)
        {
            j = (j + 1) & _mask;
            Slot* s = _slots + j;
            if (s->Key == 0) break;
            int home = Home(s->Key);
            bool stays = hole <= j ? hole < home && home <= j : hole < home || home <= j;
            if (stays) continue;
            _slots[hole] = *s;
            hole = j;
        }
        _slots[hole] = default;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Grow()
    {
        Slot* old = _slots;
        int oldCap = Capacity;
        Allocate(oldCap * 2);
        _count = 0;
        for (int i = 0; i < oldCap; i++)
        {
            if (old[i].Key == 0) continue;
            int j = Home(old[i].Key);
            while (_slots[j].Key != 0) j = (j + 1) & _mask;
            _slots[j] = old[i];
            _count++;
        }
        NativeMemory.Free(old);
    }

    /// <summary>
    /// Entry at slot <paramref name="i"/> (0 &lt;= i &lt; <see cref="Capacity"/> + 1; the last index is the zero key's side
    /// slot), for walking the table in memory order. The table must not change during the walk.
    /// </summary>
    public bool TryGetAt(int i, out ulong key, out T value)
    {
        if (i == Capacity) { key = 0; value = _zeroValue; return _hasZero; }
        key = _slots[i].Key;
        value = _slots[i].Value;
        return key != 0;
    }

    /// <summary>Removes every entry (keeps the capacity).</summary>
    public void Clear()
    {
        NativeMemory.Clear(_slots, (nuint)Capacity * (nuint)sizeof(Slot));
        _count = 0;
        _hasZero = false;
        _zeroValue = default;
    }

    public void Dispose()
    {
        if (_slots != null) NativeMemory.Free(_slots);
        _slots = null;
        GC.SuppressFinalize(this);
    }

    ~PointerTable()
    {
        if (_slots != null) NativeMemory.Free(_slots);
    }

    [Conditional("DEBUG")]
    internal void CheckInvariants()
    {
        int n = 0;
        for (int i = 0; i <= _mask; i++)
        {
            if (_slots[i].Key == 0) continue;
            n++;
            // Every slot between home and i is occupied (else a lookup would stop early).
            for (int k = Home(_slots[i].Key); k != i; k = (k + 1) & _mask)
                Debug.Assert(_slots[k].Key != 0, "probe run broken");
        }
        Debug.Assert(n == _count);
    }
}
