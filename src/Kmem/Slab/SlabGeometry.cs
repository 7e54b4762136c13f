using System.Numerics;
using Kmem.PageAlloc;

namespace Kmem.Slab;

/// <summary>
/// The layout SLUB chooses for a cache: object slot, free pointer, debug metadata, slab order and the per-cache
/// tuning (min_partial, cpu_partial). Pure functions of (size, align, flags, ctor, CPUs), as Linux's
/// calculate_alignment, calculate_sizes, calculate_order/calc_slab_order, set_min_partial and set_cpu_partial.
/// </summary>
/// <remarks>
/// Constants (x86-64, the only word size modelled: the free pointer holds a host pointer, so it is 8 bytes on every
/// profile): sizeof(void *) = 8; cache_line_size() = 64; ARCH_SLAB_MINALIGN = __alignof__(unsigned long long) = 8;
/// sizeof(struct track) = 32 (addr 8, depot handle 4, cpu 4, pid 4, padding 4, when 8: CONFIG_STACKDEPOT=y as
/// Debian builds SLUB_DEBUG); slub_max_order = PAGE_ALLOC_COSTLY_ORDER = 3; slub_min_order = 0;
/// MAX_OBJS_PER_PAGE = 32767 (slab->objects is 15 bits); MIN_PARTIAL 5, MAX_PARTIAL 10.
/// </remarks>
public readonly record struct SlabGeometry(
    int ObjectSize,
    int Size,
    int Align,
    int Inuse,
    int Offset,
    int RedLeftPad,
    int Order,
    int Objects,
    int MinOrder,
    int MinObjects,
    int MinPartial,
    int CpuPartial,
    int CpuPartialSlabs,
    bool FreePointerOutside)
{
    public const int PointerSize = 8;
    public const int CacheLineSize = 64;
    public const int ArchSlabMinAlign = 8;
    public const int TrackSize = 32;
    public const int SlubMaxOrder = PerCpuPages.CostlyOrder;
    public const int SlubMinOrder = 0;
    public const int MaxObjsPerPage = 32767;
    public const int MinPartialLimit = 5;
    public const int MaxPartialLimit = 10;

    /// <summary>Bytes of one slab (PAGE_SIZE &lt;&lt; order).</summary>
    public int SlabBytes => ArchProfile.PageSize << Order;
    /// <summary>Bytes a slab leaves unused (slab size - objects * slot).</summary>
    public int Waste => SlabBytes - Objects * Size;
    /// <summary>slab_ksize: what ksize reports for an object of this cache.</summary>
    public int KSize(SlabFlags flags) =>
        (flags & (SlabFlags.RedZone | SlabFlags.Poison)) != 0 ? ObjectSize
        : (flags & (SlabFlags.TypesafeByRcu | SlabFlags.StoreUser)) != 0 ? Inuse
        : Size;

    /// <summary>calculate_alignment.</summary>
    public static int CalculateAlignment(SlabFlags flags, int align, int size)
    {
        if ((flags & SlabFlags.HwcacheAlign) != 0)
        {
            int ralign = CacheLineSize;
            while (size <= ralign / 2) ralign /= 2;
            align = Math.Max(align, ralign);
        }
        align = Math.Max(align, ArchSlabMinAlign);
        return AlignUp(align, PointerSize);
    }

    /// <summary>slub_min_objects when not set on the command line: 4 * (fls(nr_cpus) + 1).</summary>
    public static int DefaultMinObjects(int cpus) => 4 * (Fls(cpus) + 1);

    /// <summary>order_objects.</summary>
    public static int OrderObjects(int order, int size) => (ArchProfile.PageSize << order) / size;

    /// <summary>calc_slab_order: the first order from min_order whose leftover is at most 1/fract of the slab.</summary>
    public static int CalcSlabOrder(int size, int minOrder, int maxOrder, int fractLeftover)
    {
        int order;
        for (order = minOrder; order <= maxOrder; order++)
        {
            int slabSize = ArchProfile.PageSize << order;
            if (slabSize % size <= slabSize / fractLeftover) break;
        }
        return order;
    }

    /// <summary>calculate_order; -1 (Linux: -ENOSYS) when no order up to MAX_PAGE_ORDER fits.</summary>
    public static int CalculateOrder(int size, int cpus, int minObjects = 0)
    {
        if (minObjects == 0) minObjects = DefaultMinObjects(cpus);
        int maxObjects = Math.Max(OrderObjects(SlubMaxOrder, size), 1);
        minObjects = Math.Min(minObjects, maxObjects);
        int minOrder = Math.Max(SlubMinOrder, PageAllocator.GetOrder((long)minObjects * size));
        if (OrderObjects(minOrder, size) > MaxObjsPerPage)
            return PageAllocator.GetOrder((long)size * MaxObjsPerPage) - 1;
        for (int fraction = 16; fraction > 1; fraction /= 2)
        {
            int order = CalcSlabOrder(size, minOrder, SlubMaxOrder, fraction);
            if (order <= SlubMaxOrder) return order;
        }
        int o = PageAllocator.GetOrder(size);
        return o <= Zone.MaxOrder ? o : -1;
    }

    /// <summary>
    /// calculate_sizes plus the tuning kmem_cache_open sets. Returns null when the size cannot be placed in a slab
    /// (Linux: kmem_cache_open fails with -EINVAL).
    /// </summary>
    public static SlabGeometry? Compute(int objectSize, int align, SlabFlags flags, bool hasCtor, int cpus)
    {
        if (objectSize <= 0) return null;
        align = CalculateAlignment(flags, align, objectSize);
        int size = AlignUp(objectSize, PointerSize);
        // SLAB_RED_ZONE with no room between the object and the free pointer: one more word for the right red zone.
        if ((flags & SlabFlags.RedZone) != 0 && size == objectSize) size += PointerSize;
        int inuse = size;
        int offset;
        bool outside;
        if ((flags & (SlabFlags.TypesafeByRcu | SlabFlags.Poison)) != 0 || hasCtor ||
            ((flags & SlabFlags.RedZone) != 0 && objectSize < PointerSize))
        {
            // The object must stay intact while free (RCU readers, poison, constructed state): pointer after it.
            offset = size;
            size += PointerSize;
            outside = true;
        }
        else
        {
            // Near the middle, away from the edges that small overflows from neighbours hit.
            offset = AlignDown(objectSize / 2, PointerSize);
            outside = false;
        }
        if ((flags & SlabFlags.StoreUser) != 0)
        {
            size += 2 * TrackSize;
            if ((flags & SlabFlags.Kmalloc) != 0) size += sizeof(ulong); // orig_size
        }
        int redLeftPad = 0;
        if ((flags & SlabFlags.RedZone) != 0)
        {
            size += PointerSize;
            redLeftPad = AlignUp(PointerSize, align);
            size += redLeftPad;
        }
        size = AlignUp(size, align);
        int order = CalculateOrder(size, cpus);
        if (order < 0) return null;
        int objects = OrderObjects(order, size);
        if (objects == 0) return null;
        int minOrder = PageAllocator.GetOrder(size);
        // set_min_partial: clamp(ilog2(size) / 2, MIN_PARTIAL, MAX_PARTIAL).
        int minPartial = Math.Clamp(BitOperations.Log2((uint)size) / 2, MinPartialLimit, MaxPartialLimit);
        // set_cpu_partial: objects, then slabs assuming half-full slabs. Debug caches have no CPU partial list.
        int cpuPartial = (flags & (SlabFlags.DebugMetadata | SlabFlags.ConsistencyChecks)) != 0 ? 0
            : size >= ArchProfile.PageSize ? 6 : size >= 1024 ? 24 : size >= 256 ? 52 : 120;
        int cpuPartialSlabs = (cpuPartial * 2 + objects - 1) / objects;
        return new SlabGeometry(objectSize, size, align, inuse, offset, redLeftPad, order, objects,
            minOrder, OrderObjects(minOrder, size), minPartial, cpuPartial, cpuPartialSlabs, outside);
    }

    /// <summary>fls: 1-based index of the highest set bit, 0 for 0.</summary>
    public static int Fls(int x) => x == 0 ? 0 : 32 - BitOperations.LeadingZeroCount((uint)x);

    public static int AlignUp(int x, int a) => (x + a - 1) & ~(a - 1);
    public static int AlignDown(int x, int a) => x & ~(a - 1);
}
