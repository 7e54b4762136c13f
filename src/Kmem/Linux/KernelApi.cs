using Kmem.Slab;

namespace Kmem.Linux;

/// <summary>
/// Linux spellings over a "current machine", for teaching and for porting kernel snippets:
/// <c>KernelApi.Use(machine); var p = kmalloc(64, GFP_KERNEL); kfree(p);</c> (with <c>using static Kmem.Linux.KernelApi;</c>).
/// Thin: every call forwards to the machine's page allocator, slab allocator, vmalloc or highmem layer.
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
    public const Gfp GFP_NOIO = Gfp.NoIo;
    public const Gfp GFP_USER = Gfp.User;
    public const Gfp GFP_HIGHUSER = Gfp.HighUser;
    public const Gfp GFP_HIGHUSER_MOVABLE = Gfp.HighUserMovable;
    public const Gfp GFP_DMA = Gfp.Dma;
    public const Gfp GFP_DMA32 = Gfp.Dma32;
    public const Gfp __GFP_HIGH = Gfp.High;
    public const Gfp __GFP_HIGHMEM = Gfp.HighMem;
    public const Gfp __GFP_COMP = Gfp.Comp;
    public const Gfp __GFP_NOFAIL = Gfp.NoFail;
    public const Gfp __GFP_NORETRY = Gfp.NoRetry;
    public const Gfp __GFP_RETRY_MAYFAIL = Gfp.RetryMayFail;
    public const Gfp __GFP_MEMALLOC = Gfp.MemAlloc;
    public const Gfp GFP_KERNEL_ACCOUNT = Gfp.KernelAccount;
    public const Gfp __GFP_ZERO = Gfp.Zero;
    public const Gfp __GFP_RECLAIMABLE = Gfp.Reclaimable;
    public const Gfp __GFP_NOWARN = Gfp.NoWarn;
    public const SlabFlags SLAB_HWCACHE_ALIGN = SlabFlags.HwcacheAlign;
    public const SlabFlags SLAB_RECLAIM_ACCOUNT = SlabFlags.ReclaimAccount;
    public const SlabFlags SLAB_PANIC = SlabFlags.Panic;
    public const SlabFlags SLAB_ACCOUNT = SlabFlags.Account;
    public const SlabFlags SLAB_TYPESAFE_BY_RCU = SlabFlags.TypesafeByRcu;

    public static void* kmalloc(nuint size, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => Current.Slab.Kmalloc(size, flags, caller);
    public static void* kzalloc(nuint size, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => Current.Slab.Kzalloc(size, flags, caller);
    public static void* kcalloc(nuint n, nuint size, Gfp flags) => Current.Slab.Kcalloc(n, size, flags);
    public static void* kmalloc_array(nuint n, nuint size, Gfp flags) => Current.Slab.KmallocArray(n, size, flags);
    public static void* krealloc(void* p, nuint size, Gfp flags) => Current.Slab.Krealloc(p, size, flags);
    public static void kfree(void* p, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => Current.Slab.Kfree(p, caller);
    public static void kfree_sensitive(void* p) => Current.Slab.KfreeSensitive(p);
    public static nuint ksize(void* p) => Current.Slab.Ksize(p);
    public static nuint kmalloc_size_roundup(nuint size) => SlabAllocator.KmallocSizeRoundup(size);
    public static byte* kstrdup(string? s, Gfp flags) => Current.Slab.Kstrdup(s, flags);

    public static KmemCache? kmem_cache_create(string name, uint size, uint align, SlabFlags flags, Action<nint>? ctor) =>
        Current.Slab.CreateCache(name, (int)size, (int)align, flags, ctor);
    public static void* kmem_cache_alloc(KmemCache s, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => s.Alloc(flags, caller);
    public static void* kmem_cache_zalloc(KmemCache s, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => s.Zalloc(flags, caller);
    public static void kmem_cache_free(KmemCache s, void* x, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => s.Free(x, caller);
    public static int kmem_cache_shrink(KmemCache s) => s.Shrink();
    public static void kmem_cache_destroy(KmemCache? s) => Current.Slab.DestroyCache(s);
    public static uint kmem_cache_size(KmemCache s) => (uint)s.KmemCacheSize;

    // ---- the page allocator (include/linux/gfp.h)
    public const int MAX_PAGE_ORDER = PageAlloc.Zone.MaxOrder;
    public static PageFrame* alloc_pages(Gfp gfp, int order) => Current.Pages.AllocPages(gfp, order);
    public static PageFrame* alloc_page(Gfp gfp) => Current.Pages.AllocPages(gfp, 0);
    public static void __free_pages(PageFrame* page, int order) => Current.Pages.FreePages(page, order);
    public static void __free_page(PageFrame* page) => Current.Pages.FreePages(page, 0);
    public static byte* __get_free_pages(Gfp gfp, int order) => Current.Pages.GetFreePages(gfp, order);
    public static byte* __get_free_page(Gfp gfp) => Current.Pages.GetFreePages(gfp, 0);
    public static byte* get_zeroed_page(Gfp gfp) => Current.Pages.GetZeroedPage(gfp);
    public static void free_pages(byte* addr, int order) => Current.Pages.FreePages(addr, order);
    public static void free_page(byte* addr) => Current.Pages.FreePages(addr, 0);
    public static byte* alloc_pages_exact(nuint size, Gfp gfp) => Current.Pages.AllocPagesExact(size, gfp);
    public static void free_pages_exact(byte* addr, nuint size) => Current.Pages.FreePagesExact(addr, size);
    public static void split_page(PageFrame* page, int order) => Current.Pages.SplitPage(page, order);
    public static int get_order(long size) => PageAlloc.PageAllocator.GetOrder(size);
    public static byte* page_address(PageFrame* page) => Current.MemMap.PageAddress(page);
    public static long page_to_pfn(PageFrame* page) => Current.MemMap.PageToPfn(page);
    public static PageFrame* pfn_to_page(long pfn) => Current.MemMap.PfnToPage(pfn);
    public static PageFrame* virt_to_page(void* addr) => Current.MemMap.VirtToPage(addr);
    public static ulong __pa(void* addr) => Current.MemMap.Pa(addr);
    public static byte* __va(ulong phys) => Current.MemMap.Va(phys);

    // ---- vmalloc and kvmalloc (include/linux/vmalloc.h, include/linux/slab.h)
    public static byte* vmalloc(nuint size, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => Current.Vmalloc.Vmalloc(size, caller);
    public static byte* vzalloc(nuint size, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => Current.Vmalloc.Vzalloc(size, caller);
    public static byte* __vmalloc(nuint size, Gfp gfp, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => Current.Vmalloc.VmallocGfp(size, gfp, caller);
    public static void vfree(void* addr) => Current.Vmalloc.Vfree(addr);
    public static bool is_vmalloc_addr(void* addr) => Current.Vmalloc.IsVmallocAddr(addr);
    public static PageFrame* vmalloc_to_page(void* addr) => Current.Vmalloc.VmallocToPage(addr);
    public static void* kvmalloc(nuint size, Gfp gfp) => Current.Vmalloc.Kvmalloc(size, gfp);
    public static void* kvzalloc(nuint size, Gfp gfp) => Current.Vmalloc.Kvzalloc(size, gfp);
    public static void kvfree(void* addr) => Current.Vmalloc.Kvfree(addr);

    // ---- HIGHMEM (include/linux/highmem.h)
    public static byte* kmap(PageFrame* page) => Current.Vmalloc.Highmem.Kmap(page);
    public static void kunmap(PageFrame* page) => Current.Vmalloc.Highmem.Kunmap(page);
    public static byte* kmap_local_page(PageFrame* page) => Current.Vmalloc.Highmem.KmapLocalPage(page);
    public static void kunmap_local(void* addr) => Current.Vmalloc.Highmem.KunmapLocal(addr);
}
