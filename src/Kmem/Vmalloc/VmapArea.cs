using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.Vmalloc;

/// <summary>vm_struct flags (include/linux/vmalloc.h, Linux 6.18 values).</summary>
[Flags]
public enum VmFlags : uint
{
    None = 0,
    /// <summary>VM_IOREMAP: an ioremap() area.</summary>
    IoRemap = 0x1,
    /// <summary>VM_ALLOC: vmalloc(): the area owns its pages.</summary>
    Alloc = 0x2,
    /// <summary>VM_MAP: vmap(): the caller owns the pages.</summary>
    Map = 0x4,
    /// <summary>VM_USERMAP: may be mapped to user space (vmalloc_user).</summary>
    UserMap = 0x8,
    /// <summary>VM_DMA_COHERENT.</summary>
    DmaCoherent = 0x10,
    /// <summary>VM_UNINITIALIZED: pages not yet allocated/mapped; /proc/vmallocinfo skips the area.</summary>
    Uninitialized = 0x20,
    /// <summary>VM_NO_GUARD: no guard page after the area.</summary>
    NoGuard = 0x40,
    /// <summary>VM_ALLOW_HUGE_VMAP (kvmalloc passes it; kmem maps 4 KiB pages only).</summary>
    AllowHugeVmap = 0x400,
}

/// <summary>Which structure a <see cref="VmapArea"/> node is on. Exactly one at a time.</summary>
internal enum AreaState : byte
{
    /// <summary>On the pool's free-node list.</summary>
    Unused,
    /// <summary>A free range in the free tree.</summary>
    Free,
    /// <summary>An allocated area in the busy tree.</summary>
    Busy,
    /// <summary>Unlinked from the busy tree, being unmapped by the freeing thread (in no structure).</summary>
    Unmapping,
    /// <summary>Freed and unmapped, on the lazy list until the next purge makes the range reusable.</summary>
    Lazy,
}

/// <summary>
/// Linux's <c>struct vmap_area</c> and <c>struct vm_struct</c> folded into one 64-byte node. A node is either a free
/// range (free tree), an allocated area (busy tree), a lazily freed area (lazy list) or unused (pool free list).
/// Addresses are the profile's kernel virtual addresses; [Start, End) includes the guard page.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 64)]
internal struct VmapArea
{
    [FieldOffset(0)] public ulong Start;
    [FieldOffset(8)] public ulong End;
    /// <summary>Free tree: the largest End-Start in this node's subtree (subtree_max_size).</summary>
    [FieldOffset(16)] public ulong SubtreeMax;
    [FieldOffset(24)] public int Left;
    [FieldOffset(28)] public int Right;
    [FieldOffset(32)] public int Parent;
    /// <summary>Treap heap priority (smaller = nearer the root).</summary>
    [FieldOffset(36)] public uint Prio;
    /// <summary>vm->nr_pages: pages owned by a VM_ALLOC area.</summary>
    [FieldOffset(40)] public int NrPages;
    [FieldOffset(44)] public VmFlags Flags;
    /// <summary>Lazy list / pool free list link (0 = end).</summary>
    [FieldOffset(48)] public int NextLink;
    [FieldOffset(52)] public AreaState State;
    /// <summary>Pages mapped into the area (VM_ALLOC and VM_MAP), i.e. PTEs to clear on unmap.</summary>
    [FieldOffset(56)] public int MappedPages;

    public readonly ulong Size => End - Start;
}

/// <summary>
/// Native storage for <see cref="VmapArea"/> nodes (Linux's vmap_area_cachep). Nodes live in chunks of 4096 that are
/// allocated on demand and kept until the machine is disposed, so steady-state allocation and free allocate nothing.
/// Node id 0 means "none". Caller labels sit in a parallel managed array per chunk (a reference store, no allocation).
/// Not thread-safe: the owner's lock protects it.
/// </summary>
internal sealed unsafe class VmapAreaPool : IDisposable
{
    public const int ChunkShift = 12;
    public const int ChunkSize = 1 << ChunkShift;
    /// <summary>4096 chunks × 4096 nodes = 16M areas: more than any window here can hold (an area is ≥ 1 page).</summary>
    public const int MaxChunks = 4096;

    private readonly VmapArea*[] _chunks = new VmapArea*[MaxChunks];
    private readonly string?[][] _callers = new string?[MaxChunks][];
    private int _chunkCount;
    private int _fresh = 1; // id 0 is reserved for "none"
    private int _freeList;
    private uint _prioState = 0x9E3779B9;

    /// <summary>Nodes handed out and not yet returned.</summary>
    public int InUse { get; private set; }

    static VmapAreaPool() => Debug.Assert(sizeof(VmapArea) == 64);

    public ref VmapArea this[int id]
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ref *(_chunks[id >> ChunkShift] + (id & (ChunkSize - 1)));
    }

    public string? Caller(int id) => _callers[id >> ChunkShift][id & (ChunkSize - 1)];
    public void SetCaller(int id, string? caller) => _callers[id >> ChunkShift][id & (ChunkSize - 1)] = caller;

    public int Alloc()
    {
        int id = _freeList;
        if (id != 0)
        {
            _freeList = this[id].NextLink;
        }
        else
        {
            id = _fresh;
            if ((id >> ChunkShift) >= _chunkCount) Grow();
            _fresh++;
        }
        ref VmapArea a = ref this[id];
        a = default;
        // xorshift32: treap priorities only need to be well spread, not secret.
        uint x = _prioState;
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        _prioState = x;
        a.Prio = x;
        InUse++;
        return id;
    }

    public void Free(int id)
    {
        ref VmapArea a = ref this[id];
        a.State = AreaState.Unused;
        a.NextLink = _freeList;
        _freeList = id;
        SetCaller(id, null);
        InUse--;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Grow()
    {
        if (_chunkCount == MaxChunks) throw new KmemException("kmem: vmap_area pool exhausted");
        _chunks[_chunkCount] = (VmapArea*)NativeMemory.AlignedAlloc((nuint)(ChunkSize * sizeof(VmapArea)), 64);
        _callers[_chunkCount] = new string?[ChunkSize];
        _chunkCount++;
    }

    public void Dispose()
    {
        for (int i = 0; i < _chunkCount; i++)
        {
            NativeMemory.AlignedFree(_chunks[i]);
            _chunks[i] = null;
        }
        _chunkCount = 0;
    }
}

/// <summary>
/// An address-ordered treap of <see cref="VmapArea"/> nodes with parent links, augmented with subtree_max_size:
/// Linux's free_vmap_area_root (an rb-tree augmented the same way) and, unaugmented use, the busy tree.
/// Expected O(log n) for insert, remove, neighbour lookup and the lowest-address fit.
/// </summary>
internal sealed class VaTree
{
    private readonly VmapAreaPool _pool;
    public int Root;
    public int Count;

    public VaTree(VmapAreaPool pool) => _pool = pool;

    private ulong Max(int id) => id == 0 ? 0 : _pool[id].SubtreeMax;

    private void Pull(int id)
    {
        ref VmapArea n = ref _pool[id];
        ulong m = n.End - n.Start;
        ulong l = Max(n.Left), r = Max(n.Right);
        if (l > m) m = l;
        if (r > m) m = r;
        n.SubtreeMax = m;
    }

    /// <summary>Recompute subtree_max_size from <paramref name="id"/> to the root (augment_tree_propagate_from).</summary>
    public void Propagate(int id)
    {
        bool first = true;
        while (id != 0)
        {
            ulong before = _pool[id].SubtreeMax;
            Pull(id);
            if (!first && _pool[id].SubtreeMax == before) return;
            first = false;
            id = _pool[id].Parent;
        }
    }

    private void RotateUp(int x)
    {
        ref VmapArea nx = ref _pool[x];
        int p = nx.Parent;
        ref VmapArea np = ref _pool[p];
        int g = np.Parent;
        if (np.Left == x)
        {
            int b = nx.Right;
            np.Left = b;
            if (b != 0) _pool[b].Parent = p;
            nx.Right = p;
        }
        else
        {
            int b = nx.Left;
            np.Right = b;
            if (b != 0) _pool[b].Parent = p;
            nx.Left = p;
        }
        np.Parent = x;
        nx.Parent = g;
        if (g == 0) Root = x;
        else if (_pool[g].Left == p) _pool[g].Left = x;
        else _pool[g].Right = x;
        Pull(p);
        Pull(x);
    }

    public void Insert(int id)
    {
        ref VmapArea n = ref _pool[id];
        n.Left = n.Right = n.Parent = 0;
        n.SubtreeMax = n.End - n.Start;
        Count++;
        if (Root == 0)
        {
            Root = id;
            return;
        }
        int cur = Root;
        while (true)
        {
            ref VmapArea c = ref _pool[cur];
            Debug.Assert(n.End <= c.Start || n.Start >= c.End, "overlapping vmap areas");
            int next = n.Start < c.Start ? c.Left : c.Right;
            if (next == 0)
            {
                if (n.Start < c.Start) c.Left = id; else c.Right = id;
                n.Parent = cur;
                break;
            }
            cur = next;
        }
        Propagate(cur);
        while (n.Parent != 0 && n.Prio < _pool[n.Parent].Prio) RotateUp(id);
    }

    public void Remove(int id)
    {
        ref VmapArea n = ref _pool[id];
        while (n.Left != 0 && n.Right != 0)
            RotateUp(_pool[n.Left].Prio < _pool[n.Right].Prio ? n.Left : n.Right);
        int child = n.Left != 0 ? n.Left : n.Right;
        int p = n.Parent;
        if (child != 0) _pool[child].Parent = p;
        if (p == 0) Root = child;
        else if (_pool[p].Left == id) _pool[p].Left = child;
        else _pool[p].Right = child;
        n.Left = n.Right = n.Parent = 0;
        Count--;
        if (p != 0) Propagate(p);
    }

    /// <summary>The node whose [Start, End) contains <paramref name="addr"/>, or 0.</summary>
    public int FindContaining(ulong addr)
    {
        int cur = Root;
        while (cur != 0)
        {
            ref VmapArea c = ref _pool[cur];
            if (addr < c.Start) cur = c.Left;
            else if (addr >= c.End) cur = c.Right;
            else return cur;
        }
        return 0;
    }

    /// <summary>The last node with Start &lt; <paramref name="addr"/> and the first with Start ≥ it (0 when none).</summary>
    public (int Prev, int Next) Neighbours(ulong addr)
    {
        int prev = 0, next = 0, cur = Root;
        while (cur != 0)
        {
            ref VmapArea c = ref _pool[cur];
            if (c.Start < addr)
            {
                prev = cur;
                cur = c.Right;
            }
            else
            {
                next = cur;
                cur = c.Left;
            }
        }
        return (prev, next);
    }

    /// <summary>
    /// find_vmap_lowest_match: the lowest-addressed free node that holds <paramref name="size"/> bytes at an address
    /// aligned to <paramref name="align"/>. Subtrees whose subtree_max_size is below the size are skipped whole.
    /// </summary>
    public int FindLowest(int id, ulong size, ulong align, out ulong at)
    {
        while (id != 0)
        {
            ref VmapArea n = ref _pool[id];
            if (n.SubtreeMax < size) break;
            if (Max(n.Left) >= size)
            {
                int r = FindLowest(n.Left, size, align, out at);
                if (r != 0) return r;
            }
            ulong start = (n.Start + align - 1) & ~(align - 1);
            if (start >= n.Start && start < n.End && n.End - start >= size)
            {
                at = start;
                return id;
            }
            id = n.Right;
        }
        at = 0;
        return 0;
    }

    /// <summary>In-order walk (for views and checks).</summary>
    public void ForEach(Action<int> visit)
    {
        // Iterative in-order walk with parent links: no recursion, no allocation beyond the delegate.
        int cur = Root;
        if (cur == 0) return;
        while (_pool[cur].Left != 0) cur = _pool[cur].Left;
        while (cur != 0)
        {
            visit(cur);
            if (_pool[cur].Right != 0)
            {
                cur = _pool[cur].Right;
                while (_pool[cur].Left != 0) cur = _pool[cur].Left;
            }
            else
            {
                int p = _pool[cur].Parent;
                while (p != 0 && _pool[p].Right == cur)
                {
                    cur = p;
                    p = _pool[p].Parent;
                }
                cur = p;
            }
        }
    }

    /// <summary>Debug check: order, no overlap, parent links, heap order, augmentation. Returns a problem or null.</summary>
    public string? Check(bool merged)
    {
        string? problem = null;
        ulong lastEnd = 0;
        int seen = 0;
        ForEach(id =>
        {
            ref VmapArea n = ref _pool[id];
            seen++;
            if (problem != null) return;
            if (n.Start < lastEnd || (merged && seen > 1 && n.Start == lastEnd)) problem = $"node {id} [{n.Start:x}-{n.End:x}) overlaps or is unmerged with previous end {lastEnd:x}";
            ulong want = Math.Max(n.End - n.Start, Math.Max(Max(n.Left), Max(n.Right)));
            if (n.SubtreeMax != want) problem = $"node {id} subtree_max {n.SubtreeMax:x} != {want:x}";
            if (n.Left != 0 && (_pool[n.Left].Parent != id || _pool[n.Left].Prio < n.Prio)) problem = $"node {id} left link/heap broken";
            if (n.Right != 0 && (_pool[n.Right].Parent != id || _pool[n.Right].Prio < n.Prio)) problem = $"node {id} right link/heap broken";
            lastEnd = n.End;
        });
        if (problem == null && seen != Count) problem = $"tree holds {seen} nodes, count says {Count}";
        return problem;
    }
}
