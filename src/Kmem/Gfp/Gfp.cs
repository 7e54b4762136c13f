namespace Kmem;

/// <summary>
/// GFP ("get free pages") flags with Linux 6.18 bit values (include/linux/gfp_types.h).
/// Bits are grouped as Linux groups them: zone modifiers (which zones may satisfy the request),
/// mobility (which migratetype the pages belong to), watermark modifiers (which reserves may be used),
/// reclaim modifiers (may the allocator sleep, start I/O, call into filesystems), and action modifiers.
/// The composite "types" at the end are what kernel code actually passes.
/// </summary>
/// <remarks>
/// <para><b>Configuration-dependent bits.</b> Since Linux 6.8 the bit numbers after __GFP_ZEROTAGS (bit 23) are
/// allocated by an enum whose members exist only under some configs: __GFP_SKIP_ZERO and __GFP_SKIP_KASAN
/// (CONFIG_KASAN_HW_TAGS, arm64 MTE only), __GFP_NOLOCKDEP (CONFIG_LOCKDEP), __GFP_NO_OBJ_EXT
/// (CONFIG_SLAB_OBJ_EXT, selected by MEMCG or MEM_ALLOC_PROFILING). A flag whose config is off is defined as 0.
/// kmem models the traced x86-64 kernel (see shared/README.md): no KASAN_HW_TAGS, no LOCKDEP, SLAB_OBJ_EXT on.
/// So __GFP_SKIP_ZERO, __GFP_SKIP_KASAN and __GFP_NOLOCKDEP are 0 and have no member here (a zero-valued
/// member would alias <see cref="None"/>), GFP_HIGHUSER_MOVABLE's __GFP_SKIP_KASAN term vanishes, and
/// __GFP_NO_OBJ_EXT takes the first free bit, 24. __GFP_BITS_SHIFT (___GFP_LAST_BIT) is therefore 25.</para>
/// <para><b>Composite types at a glance</b> (what each lets the allocator do):</para>
/// <code>
/// type                  sleep  I/O  FS   kswapd  reserves (watermark check, see GfpExt.Reserve)
/// GFP_ATOMIC            no     -    -    wake    __GFP_HIGH + non-blocking: min/2 - min/8; order>0 may use HIGHATOMIC blocks
/// GFP_NOWAIT            no     -    -    wake    none below min (non-blocking: HIGHATOMIC blocks count as free)
/// GFP_NOIO              yes    no   no   wake    none
/// GFP_NOFS              yes    yes  no   wake    none
/// GFP_KERNEL            yes    yes  yes  wake    none
/// GFP_USER              yes    yes  yes  wake    none (cpuset hardwall enforced)
/// GFP_HIGHUSER_MOVABLE  yes    yes  yes  wake    none; may use HIGHMEM/MOVABLE zones, MIGRATE_MOVABLE
/// GFP_TRANSHUGE_LIGHT   no     -    -    no      none (__GFP_NOMEMALLOC); fails fast, caller falls back to small pages
/// GFP_TRANSHUGE         yes    yes  yes  no      none (__GFP_NOMEMALLOC); khugepaged may reclaim/compact directly
/// </code>
/// <para>I/O and FS only matter when the caller may sleep: without __GFP_DIRECT_RECLAIM no reclaim runs in the
/// caller's context, which is why the "-" entries above are irrelevant rather than "no".</para>
/// </remarks>
[Flags]
public enum Gfp : uint
{
    /// <summary>No flags: ftrace prints <c>none</c>.</summary>
    None = 0,

    // --- Zone modifiers (the low 4 bits, GFP_ZONEMASK): gfp_zone() maps them through GFP_ZONE_TABLE.
    /// <summary>__GFP_DMA: only ZONE_DMA (below 16 MiB), for ISA-style devices.</summary>
    Dma = 0x01,
    /// <summary>__GFP_HIGHMEM: ZONE_HIGHMEM is allowed (frames without a permanent kernel mapping).</summary>
    HighMem = 0x02,
    /// <summary>__GFP_DMA32: only ZONE_DMA32 and below (below 4 GiB).</summary>
    Dma32 = 0x04,
    /// <summary>__GFP_MOVABLE: the pages can be migrated or reclaimed (MIGRATE_MOVABLE; ZONE_MOVABLE with HIGHMEM).</summary>
    Movable = 0x08,

    // --- Page mobility.
    /// <summary>__GFP_RECLAIMABLE: slab pages with SLAB_RECLAIM_ACCOUNT, freed through shrinkers (MIGRATE_RECLAIMABLE).</summary>
    Reclaimable = 0x10,

    // --- Watermark modifiers.
    /// <summary>__GFP_HIGH: high priority; may dip below the min watermark (to min/2).</summary>
    High = 0x20,

    // --- Reclaim modifiers.
    /// <summary>__GFP_IO: reclaim may start physical I/O (swap out, write back).</summary>
    Io = 0x40,
    /// <summary>__GFP_FS: reclaim may call into filesystems (and their shrinkers).</summary>
    Fs = 0x80,

    // --- Action modifiers.
    /// <summary>__GFP_ZERO: return zeroed memory.</summary>
    Zero = 0x100,
    /// <summary>__GFP_DIRECT_RECLAIM: the caller may sleep and reclaim memory itself.</summary>
    DirectReclaim = 0x400,
    /// <summary>__GFP_KSWAPD_RECLAIM: wake kswapd when a zone falls below its low watermark.</summary>
    KswapdReclaim = 0x800,
    /// <summary>__GFP_WRITE: the caller intends to dirty the page (dirty-limit spreading).</summary>
    Write = 0x1000,
    /// <summary>__GFP_NOWARN: suppress the allocation-failure report.</summary>
    NoWarn = 0x2000,
    /// <summary>__GFP_RETRY_MAYFAIL: retry while reclaim makes progress, but may fail; never OOM-kills.</summary>
    RetryMayFail = 0x4000,
    /// <summary>__GFP_NOFAIL: the allocation must not fail; retry forever.</summary>
    NoFail = 0x8000,
    /// <summary>__GFP_NORETRY: one light attempt at reclaim, then fail.</summary>
    NoRetry = 0x10000,
    /// <summary>__GFP_MEMALLOC: may use all reserves (ignore watermarks); for memory-freeing paths.</summary>
    MemAlloc = 0x20000,
    /// <summary>__GFP_COMP: make a compound page (head plus tails).</summary>
    Comp = 0x40000,
    /// <summary>__GFP_NOMEMALLOC: never use emergency reserves, overriding __GFP_MEMALLOC.</summary>
    NoMemAlloc = 0x80000,
    /// <summary>__GFP_HARDWALL: enforce the cpuset memory policy.</summary>
    HardWall = 0x100000,
    /// <summary>__GFP_THISNODE: no fallback to other NUMA nodes.</summary>
    ThisNode = 0x200000,
    /// <summary>__GFP_ACCOUNT: charge the allocation to the caller's memory cgroup (kmalloc-cg-* caches).</summary>
    Account = 0x400000,
    /// <summary>__GFP_ZEROTAGS: zero memory tags together with the memory (arm64 MTE).</summary>
    ZeroTags = 0x800000,
    /// <summary>
    /// __GFP_NO_OBJ_EXT: the slab gets no object-extension vector (used when allocating that vector itself, to
    /// stop recursion). Bit 24 only because SKIP_ZERO/SKIP_KASAN/NOLOCKDEP are configured out (see remarks).
    /// ftrace's name table has no entry for it, so it prints as the leftover <c>0x1000000</c>.
    /// </summary>
    NoObjExt = 0x1000000,

    /// <summary>__GFP_RECLAIM: both reclaim bits.</summary>
    Reclaim = DirectReclaim | KswapdReclaim,

    // --- The types kernel code passes.
    /// <summary>GFP_ATOMIC: cannot sleep (interrupt, spinlock held); may use the atomic reserve (below min) and wakes kswapd.</summary>
    Atomic = High | KswapdReclaim,
    /// <summary>GFP_KERNEL: ordinary kernel allocation; may sleep, reclaim, do I/O and call filesystems.</summary>
    Kernel = Reclaim | Io | Fs,
    /// <summary>GFP_KERNEL_ACCOUNT: GFP_KERNEL charged to the memory cgroup.</summary>
    KernelAccount = Kernel | Account,
    /// <summary>
    /// GFP_NOWAIT: cannot sleep and gets no reserve below min; wakes kswapd. Recent kernels (2025, including the
    /// traced 6.18) include __GFP_NOWARN because failure is expected and must not print a report; older kernels
    /// defined it as __GFP_KSWAPD_RECLAIM alone, so old traces print <c>GFP_NOWAIT|__GFP_NOWARN</c> for this value.
    /// </summary>
    NoWait = KswapdReclaim | NoWarn,
    /// <summary>GFP_NOIO: may sleep and reclaim, but start no I/O (block-layer paths).</summary>
    NoIo = Reclaim,
    /// <summary>GFP_NOFS: may sleep, reclaim and do I/O, but not call into filesystems (filesystem paths).</summary>
    NoFs = Reclaim | Io,
    /// <summary>GFP_USER: for user-space memory the kernel also touches; like GFP_KERNEL, cpuset-enforced.</summary>
    User = Reclaim | Io | Fs | HardWall,
    /// <summary>GFP_DMA: ZONE_DMA only (historical; combine with GFP_KERNEL or GFP_ATOMIC).</summary>
    GfpDma = Dma,
    /// <summary>GFP_DMA32: ZONE_DMA32 only.</summary>
    GfpDma32 = Dma32,
    /// <summary>GFP_HIGHUSER: user pages that may live in HIGHMEM.</summary>
    HighUser = User | HighMem,
    /// <summary>
    /// GFP_HIGHUSER_MOVABLE: user pages that may live in HIGHMEM and can be migrated (demand paging, page cache).
    /// Linux also ORs in __GFP_SKIP_KASAN, which is 0 without CONFIG_KASAN_HW_TAGS.
    /// </summary>
    HighUserMovable = HighUser | Movable,
    /// <summary>GFP_TRANSHUGE_LIGHT: a transparent huge page attempt that never reclaims, nor wakes kswapd (page-fault path).</summary>
    TransHugeLight = (HighUserMovable | Comp | NoMemAlloc | NoWarn) & ~Reclaim,
    /// <summary>GFP_TRANSHUGE: a transparent huge page attempt that may reclaim and compact directly, but does not wake kswapd (khugepaged).</summary>
    TransHuge = TransHugeLight | DirectReclaim,
}
