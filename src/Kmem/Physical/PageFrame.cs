using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem;

/// <summary>Page flags (Linux's PG_* bits plus the page types kept in page->page_type). Polarity: a set bit means the named state holds.</summary>
[Flags]
public enum PageFlags : ulong
{
    None = 0,
    /// <summary>PG_reserved: never handed to the buddy allocator (firmware, holes).</summary>
    Reserved = 1 << 0,
    /// <summary>PageBuddy: free, on a buddy free list; <see cref="PageFrame.Order"/> is the block's order.</summary>
    Buddy = 1 << 1,
    /// <summary>kmem-only: free, cached on a per-CPU list (Linux does not mark these; kmem does to catch double frees).</summary>
    OnPcp = 1 << 2,
    /// <summary>PG_head: first page of a compound page; <see cref="PageFrame.Order"/> is the compound order.</summary>
    Head = 1 << 3,
    /// <summary>Tail page of a compound page; <see cref="PageFrame.CompoundHead"/> is the head's PFN.</summary>
    Tail = 1 << 4,
    /// <summary>PageSlab: the page (head) belongs to a slab cache.</summary>
    Slab = 1 << 5,
    /// <summary>The frame is in ZONE_HIGHMEM: no permanent kernel mapping.</summary>
    HighMem = 1 << 6,
    /// <summary>kmem-only: the first page of an allocation; <see cref="PageFrame.Order"/> is the order it was allocated with.</summary>
    AllocHead = 1 << 7,
    /// <summary>PG_lru: on an LRU list (page cache or anonymous user memory).</summary>
    Lru = 1 << 8,
    /// <summary>PG_active: on the active LRU list.</summary>
    Active = 1 << 9,
    /// <summary>PG_dirty: must be written back before reuse.</summary>
    Dirty = 1 << 10,
    /// <summary>PG_writeback: being written back.</summary>
    Writeback = 1 << 11,
    /// <summary>PG_swapbacked: anonymous memory (backed by swap), as opposed to file pages.</summary>
    SwapBacked = 1 << 12,
    /// <summary>PG_referenced: touched since the last LRU scan.</summary>
    Referenced = 1 << 13,
    /// <summary>PG_locked: an operation (reclaim, migration) owns the page.</summary>
    Locked = 1 << 14,
    /// <summary>The page is mapped into the vmalloc area.</summary>
    Vmalloc = 1 << 15,
    /// <summary>PageTable: page-table page (accounted as PageTables).</summary>
    PageTable = 1 << 16,
}

/// <summary>
/// Linux's <c>struct page</c>: one per frame, 64 bytes, in native memory (see <see cref="Physical.MemMap"/>).
/// </summary>
/// <remarks>
/// Fields are not overlaid as Linux's unions are; each layer owns its fields:
/// buddy/pcp: <see cref="Next"/>, <see cref="Prev"/> (free-list links by PFN, -1 = none), <see cref="Order"/>, <see cref="ListType"/>;
/// compound pages: <see cref="CompoundHead"/> on tails, <see cref="Order"/> on the head;
/// slab: <see cref="SlabCache"/>, <see cref="Freelist"/>, <see cref="Inuse"/>, <see cref="Objects"/>, <see cref="Frozen"/> (head page only),
/// and the same list links for the node partial list (a slab page is never on a free list at the same time);
/// reclaim/user memory: <see cref="Mapping"/>, <see cref="Private"/>, <see cref="MapCount"/>, LRU links in <see cref="Next"/>/<see cref="Prev"/>.
/// </remarks>
[StructLayout(LayoutKind.Explicit, Size = 64)]
public struct PageFrame
{
    [FieldOffset(0)] public PageFlags Flags;
    /// <summary>_refcount: 0 when free; 1 when allocated (set_page_refcounted).</summary>
    [FieldOffset(8)] public int RefCount;
    /// <summary>_mapcount: user mappings of the page (-1 = none, as Linux). Slab head pages: the cache's thread-sheaf offset (ThreadSheaves.OffsetOf).</summary>
    [FieldOffset(12)] public int MapCount;
    [FieldOffset(16)] public int Next;
    [FieldOffset(20)] public int Prev;
    /// <summary>Buddy order when free; allocation order on an <see cref="PageFlags.AllocHead"/>; compound order on a head.</summary>
    [FieldOffset(24)] public byte Order;
    [FieldOffset(25)] public ZoneType Zone;
    /// <summary>The free list (migratetype) or per-CPU list the page sits on.</summary>
    [FieldOffset(26)] public MigrateType ListType;
    /// <summary>The CPU whose per-CPU list holds the page (when <see cref="PageFlags.OnPcp"/>).</summary>
    [FieldOffset(27)] public byte PcpCpu;
    /// <summary>PFN of the compound head (tails only), else -1.</summary>
    [FieldOffset(28)] public int CompoundHead;
    /// <summary>Slab: first free object (host address), or 0.</summary>
    [FieldOffset(32)] public nint Freelist;
    /// <summary>Slab: the owning cache's id (index into the slab registry, from 1); 0 on every page that is not a slab head.</summary>
    [FieldOffset(40)] public int SlabCache;
    /// <summary>Slab: objects in use.</summary>
    [FieldOffset(44)] public ushort Inuse;
    /// <summary>Slab: objects:15, frozen:1, as Linux packs them.</summary>
    [FieldOffset(46)] public ushort ObjectsFrozen;
    /// <summary>page->private: owner-defined (buddy: nothing; swap: swap entry; vmalloc: owning area id).</summary>
    [FieldOffset(48)] public nint Private;
    /// <summary>page->mapping: owner-defined (file or anon owner id; 0 = none).</summary>
    [FieldOffset(56)] public nint Mapping;

    public ushort Objects
    {
        readonly get => (ushort)(ObjectsFrozen & 0x7fff);
        set => ObjectsFrozen = (ushort)((ObjectsFrozen & 0x8000) | (value & 0x7fff));
    }

    public bool Frozen
    {
        readonly get => (ObjectsFrozen & 0x8000) != 0;
        set => ObjectsFrozen = (ushort)(value ? ObjectsFrozen | 0x8000 : ObjectsFrozen & 0x7fff);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool Has(PageFlags f) => (Flags & f) != 0;

    public const int None = -1;
}
