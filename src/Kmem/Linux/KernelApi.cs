using Kmem.Slab;

namespace Kmem.Linux;

/// <summary>
/// Linux spellings over a "current machine", for teaching and for porting kernel snippets:
/// <c>KernelApi.Use(machine); var p = kmalloc(64, GFP_KERNEL); kfree(p);</c> (with <c>using static Kmem.Linux.KernelApi;</c>).
/// Thin: every call forwards to <see cref="Machine.Slab"/>.
/// </summary>
public static unsafe class KernelApi
{
    private static Machine? s_current;

    /// <summary>The machine the calls act on.</summary>
    public static Machine Current => s_current ?? throw new InvalidOperationException("KernelApi.Use(machine) first");

    public static void Use(Machine? machine) => s_current = machine;

    public const Gfp GFP_KERNEL = Gfp.Kernel;
    public const Gfp GFP_ATOMIC = Gfp.Atomic;
    public const Gfp GFP_NOWAIT = Gfp.NoWait;
    public const Gfp GFP_NOFS = Gfp.NoFs;
    public const Gfp GFP_DMA = Gfp.Dma;
    public const Gfp GFP_KERNEL_ACCOUNT = Gfp.KernelAccount;
    public const Gfp __GFP_ZERO = Gfp.Zero;
    public const Gfp __GFP_RECLAIMABLE = Gfp.Reclaimable;
    public const Gfp __GFP_NOWARN = Gfp.NoWarn;
    public const SlabFlags SLAB_HWCACHE_ALIGN = SlabFlags.HwcacheAlign;
    public const SlabFlags SLAB_RECLAIM_ACCOUNT = SlabFlags.ReclaimAccount;
    public const SlabFlags SLAB_PANIC = SlabFlags.Panic;
    public const SlabFlags SLAB_ACCOUNT = SlabFlags.Account;
    public const SlabFlags SLAB_TYPESAFE_BY_RCU = SlabFlags.TypesafeByRcu;

    public static void* kmalloc(nuint size, Gfp flags) => Current.Slab.Kmalloc(size, flags);
    public static void* kzalloc(nuint size, Gfp flags) => Current.Slab.Kzalloc(size, flags);
    public static void* kcalloc(nuint n, nuint size, Gfp flags) => Current.Slab.Kcalloc(n, size, flags);
    public static void* kmalloc_array(nuint n, nuint size, Gfp flags) => Current.Slab.KmallocArray(n, size, flags);
    public static void* krealloc(void* p, nuint size, Gfp flags) => Current.Slab.Krealloc(p, size, flags);
    public static void kfree(void* p) => Current.Slab.Kfree(p);
    public static void kfree_sensitive(void* p) => Current.Slab.KfreeSensitive(p);
    public static nuint ksize(void* p) => Current.Slab.Ksize(p);
    public static nuint kmalloc_size_roundup(nuint size) => SlabAllocator.KmallocSizeRoundup(size);
    public static byte* kstrdup(string? s, Gfp flags) => Current.Slab.Kstrdup(s, flags);

    public static KmemCache? kmem_cache_create(string name, uint size, uint align, SlabFlags flags, Action<nint>? ctor) =>
        Current.Slab.CreateCache(name, (int)size, (int)align, flags, ctor);
    public static void* kmem_cache_alloc(KmemCache s, Gfp flags) => s.Alloc(flags);
    public static void* kmem_cache_zalloc(KmemCache s, Gfp flags) => s.Zalloc(flags);
    public static void kmem_cache_free(KmemCache s, void* x) => s.Free(x);
    public static int kmem_cache_shrink(KmemCache s) => s.Shrink();
    public static void kmem_cache_destroy(KmemCache? s) => Current.Slab.DestroyCache(s);
    public static uint kmem_cache_size(KmemCache s) => (uint)s.KmemCacheSize;
}
