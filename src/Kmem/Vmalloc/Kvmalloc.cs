using Kmem.Physical;

namespace Kmem.Vmalloc;

/// <summary>
/// The kmalloc entry points kvmalloc needs: a seam so tests can observe the flags kvmalloc passes and make kmalloc
/// fail on demand. The machine's slab allocator (<see cref="SlabKmalloc"/>) is the default.
/// </summary>
public unsafe interface IKmalloc
{
    /// <summary>kmalloc(size, gfp): null on failure; ZERO_SIZE_PTR for size 0.</summary>
    void* Kmalloc(nuint size, Gfp gfp);
    /// <summary>kfree(p): null and ZERO_SIZE_PTR are ignored.</summary>
    void Kfree(void* p);
    /// <summary>ksize(p): the usable size of the object.</summary>
    nuint Ksize(void* p);
    /// <summary>krealloc(p, size, gfp).</summary>
    void* Krealloc(void* p, nuint size, Gfp gfp);
}

public static unsafe class KvConst
{
    /// <summary>ZERO_SIZE_PTR: ((void *)16), what kmalloc(0) and krealloc(p, 0) return.</summary>
    public static byte* ZeroSizePtr => (byte*)16;
    public static bool IsZeroOrNull(void* p) => (nuint)p <= 16;
}

/// <summary>kmalloc as the machine's SLUB allocator implements it (kmalloc caches up to 8 KiB, kmalloc_large above).</summary>
public sealed unsafe class SlabKmalloc(Slab.SlabAllocator slab) : IKmalloc
{
    public void* Kmalloc(nuint size, Gfp gfp) => slab.Kmalloc(size, gfp);
    public void Kfree(void* p) => slab.Kfree(p);
    public nuint Ksize(void* p) => slab.Ksize(p);
    public void* Krealloc(void* p, nuint size, Gfp gfp) => slab.Krealloc(p, size, gfp);
}

public sealed unsafe partial class VmallocAllocator
{
    /// <summary>
    /// kmalloc_gfp_adjust (Linux 6.18 mm/slub.c): above a page, kvmalloc's kmalloc attempt is made lightweight:
    /// __GFP_NOWARN; no direct reclaim unless __GFP_RETRY_MAYFAIL (the caller prefers contiguous memory); no
    /// __GFP_NOFAIL (the vmalloc fallback implements it). Kernels before 6.16 set __GFP_NORETRY instead of
    /// clearing __GFP_DIRECT_RECLAIM; kmem follows 6.18, the kernel the shared traces come from.
    /// </summary>
    public static Gfp KmallocGfpAdjust(Gfp flags, nuint size)
    {
        if (size > (nuint)ArchProfile.PageSize)
        {
            flags |= Gfp.NoWarn;
            if ((flags & Gfp.RetryMayFail) == 0) flags &= ~Gfp.DirectReclaim;
            flags &= ~Gfp.NoFail;
        }
        return flags;
    }

    /// <summary>
    /// kvmalloc_node (__kvmalloc_node_noprof, 6.18): try kmalloc with <see cref="KmallocGfpAdjust"/>'d flags; at or
    /// below a page, or on success, that is the answer. Otherwise fall back to vmalloc only if the original flags allow
    /// blocking (6.18's vmalloc cannot serve GFP_ATOMIC/GFP_NOWAIT) and the size fits an int.
    /// </summary>
    public byte* Kvmalloc(nuint size, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "")
    {
        byte* ret = (byte*)Kmalloc.Kmalloc(size, KmallocGfpAdjust(flags, size));
        if (ret != null || size <= (nuint)ArchProfile.PageSize) return ret;
        if (!flags.AllowsBlocking()) return null;
        if (size > int.MaxValue)
        {
            if ((flags & Gfp.NoWarn) == 0)
                _log.Write(Diagnostics.LogLevel.Warning, $"WARNING: CPU: {Cpu.Current(_m.CpuCount)} PID: {Diagnostics.CurrentTask.Pid} at mm/slub.c __kvmalloc_node_noprof: size {size} > INT_MAX");
            return null;
        }
        return VmallocNodeRange(size, 1, flags, VmFlags.AllowHugeVmap, caller);
    }

    /// <summary>kvzalloc(size, flags).</summary>
    public byte* Kvzalloc(nuint size, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "") => Kvmalloc(size, flags | Gfp.Zero, caller);

    /// <summary>kvcalloc(n, size, flags) = kvmalloc_array(n, size, flags | __GFP_ZERO): null when n*size overflows.</summary>
    public byte* Kvcalloc(nuint n, nuint size, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "")
    {
        nuint bytes;
        try { bytes = checked(n * size); }
        catch (OverflowException) { return null; }
        return Kvmalloc(bytes, flags | Gfp.Zero, caller);
    }

    /// <summary>kvfree(addr): vfree for vmalloc addresses, kfree otherwise.</summary>
    public void Kvfree(void* addr)
    {
        if (IsVmallocAddr(addr) || (IsNommu && IsNommuVmalloc(addr))) Vfree(addr);
        else Kmalloc.Kfree(addr);
    }

    // On NOMMU a vmalloc block is direct-mapped; its head page carries PageFlags.Vmalloc.
    private bool IsNommuVmalloc(void* addr)
    {
        if (KvConst.IsZeroOrNull(addr)) return false;
        PageFrame* page = _map.VirtToPage(addr);
        return page != null && _map.CompoundHead(page)->Has(PageFlags.Vmalloc);
    }

    /// <summary>
    /// kvrealloc(p, size, flags) (6.18): vrealloc for a vmalloc address; else krealloc with adjusted flags and, when
    /// that fails, kvmalloc + copy of ksize(p) bytes + kfree. Size 0 frees and returns ZERO_SIZE_PTR (krealloc) or null (vrealloc).
    /// </summary>
    public byte* Kvrealloc(void* p, nuint size, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "")
    {
        if (IsVmallocAddr(p)) return Vrealloc(p, size, flags, caller);
        byte* n = (byte*)Kmalloc.Krealloc(p, size, KmallocGfpAdjust(flags, size));
        if (n == null)
        {
            n = Kvmalloc(size, flags, caller);
            if (n == null) return null;
            if (!KvConst.IsZeroOrNull(p))
            {
                Buffer.MemoryCopy(p, n, size, Math.Min(size, Kmalloc.Ksize(p)));
                Kmalloc.Kfree(p);
            }
        }
        return n;
    }

    /// <summary>vrealloc(p, size, flags): keep the area when the new size fits its pages; else allocate, copy, vfree.</summary>
    public byte* Vrealloc(void* p, nuint size, Gfp flags, [System.Runtime.CompilerServices.CallerMemberName] string caller = "")
    {
        if (size == 0)
        {
            Vfree(p);
            return null;
        }
        nuint alloced = 0;
        if (p != null)
        {
            if (FindVmArea(p) is not { } vm || vm.Addr != (nint)p)
            {
                string r = $"WARNING: Trying to vrealloc() nonexistent vm area ({Kva(p)})";
                throw Report(new KmemException(r, r));
            }
            alloced = (nuint)vm.NrPages << ArchProfile.PageShift;
            if (size <= alloced) return (byte*)p;
        }
        byte* n = VmallocNodeRange(size, 1, flags, VmFlags.None, caller);
        if (n == null) return null;
        if (p != null)
        {
            Buffer.MemoryCopy(p, n, size, alloced);
            Vfree(p);
        }
        return n;
    }
}
