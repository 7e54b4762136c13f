using System.Diagnostics;
using System.Reflection;
using System.Runtime.CompilerServices;
using Kmem.Slab;

namespace Kmem.Tracing.Emit;

/// <summary>
/// The slab allocator's tracepoint bodies (trace_kmalloc, trace_kfree, trace_kmem_cache_alloc,
/// trace_kmem_cache_free), kept out of src/Kmem/Slab so the hot paths carry one `if (Tracepoints.XOn)` line each.
/// <para>
/// ptr is the object's kernel virtual address (as the machine prints it); bytes_alloc is what kmem really handed out
/// (ksize: the size class, or PAGE_SIZE &lt;&lt; order for kmalloc_large). call_site is the nearest caller outside the
/// slab allocator and the tracing code, "Type.Method" (Linux's _RET_IP_ costs nothing; this costs a stack walk of a
/// few microseconds per event, only while the event is enabled; labels are cached per method).
/// </para>
/// </summary>
internal static unsafe class SlabTrace
{
    private static readonly Dictionary<MethodBase, string> s_sites = [];
    private static readonly Lock s_sitesLock = new();

    /// <summary>The calling method outside kmem's slab and tracing code, as "Type.Method".</summary>
    /// <summary>
    /// The call site: the label the caller passed (the entry points take [CallerMemberName], so this is the calling
    /// method's name at no run-time cost), or, when none was passed, the first frame outside the slab layer.
    /// </summary>
    private static string Site(string caller) => caller.Length != 0 ? caller : CallSite();

    internal static string CallSite()
    {
        var st = new StackTrace(2, false);
        for (int i = 0; i < st.FrameCount; i++)
        {
            MethodBase? m = st.GetFrame(i)?.GetMethod();
            Type? t = m?.DeclaringType;
            if (m == null || t == null) continue;
            string ns = t.Namespace ?? "";
            if (ns == "Kmem.Slab" || ns == "Kmem.Tracing.Emit") continue;
            lock (s_sitesLock)
            {
                if (!s_sites.TryGetValue(m, out string? label))
                {
                    // Nested and compiler-generated types (lambdas, local functions): name the outermost user type.
                    Type outer = t;
                    while (outer.DeclaringType != null && outer.Name.Contains('<', StringComparison.Ordinal)) outer = outer.DeclaringType;
                    string method = m.Name.StartsWith('<') && m.Name.IndexOf('>') > 1 ? m.Name[1..m.Name.IndexOf('>')] : m.Name;
                    label = $"{outer.Name}.{method}";
                    s_sites[m] = label;
                }
                return label;
            }
        }
        return "unknown";
    }

    private static ulong Kva(SlabAllocator s, void* p) => p == null ? 0 : s.Machine.Physical.ToKernelVirtual(p);

    /// <summary>trace_kmalloc after kmalloc(size, gfp) returned <paramref name="p"/> (null: failed). ZERO_SIZE_PTR is not traced, as in Linux.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Kmalloc(SlabAllocator s, void* p, nuint size, Gfp gfp, string caller)
    {
        if (p == SlabAllocator.ZeroSizePtr) return;
        long bytesAlloc = p != null ? (long)s.Ksize(p) : (long)SlabAllocator.KmallocSizeRoundup(size);
        Tracepoints.Kmalloc(Site(caller), (nint)Kva(s, p), (long)size, bytesAlloc, gfp, -1, (gfp & Gfp.Account) != 0);
    }

    /// <summary>trace_kfree at the start of kfree(p) (NULL included, as Linux logs kfree(NULL)).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Kfree(SlabAllocator s, void* p, string caller)
    {
        Tracepoints.Kfree(Site(caller), p == SlabAllocator.ZeroSizePtr ? 0x10 : (nint)Kva(s, p));
    }

    /// <summary>trace_kmem_cache_alloc after kmem_cache_alloc(c, gfp) returned <paramref name="p"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void CacheAlloc(SlabAllocator s, KmemCache c, void* p, Gfp gfp, string caller)
    {
        Tracepoints.KmemCacheAlloc(Site(caller), (nint)Kva(s, p), c.Name, c.ObjectSize, c.Size, gfp, -1,
            (gfp & Gfp.Account) != 0 || (c.Flags & SlabFlags.Account) != 0);
    }

    /// <summary>trace_kmem_cache_free at the start of kmem_cache_free(c, p).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void CacheFree(SlabAllocator s, KmemCache c, void* p, string caller)
    {
        Tracepoints.KmemCacheFree(Site(caller), (nint)Kva(s, p), c.Name);
    }
}
