using System.Runtime.InteropServices;

namespace Kmem.Physical;

/// <summary>
/// Real "physical memory" and the window that plays the kernel's virtual address space.
/// </summary>
/// <remarks>
/// Design and invariants:
/// <list type="number">
/// <item>RAM is a memfd of MaxPfn pages: frame <c>pfn</c> is the memfd's bytes [pfn*4096, pfn*4096+4096). The memfd is
/// sparse: a frame costs host memory only once written.</item>
/// <item>The window is one host reservation made at boot and kept until <see cref="Dispose"/>. Every page of it is
/// either PROT_NONE (unmapped: touching it faults, as an unmapped kernel address would) or a MAP_SHARED view of one
/// frame. Because views share the memfd, a frame written through one mapping reads back through every other.</item>
/// <item>The direct map is a single view of frames [0, LowmemPfnEnd) at window offset 0, so __pa/__va/virt_to_page/
/// page_address are pointer arithmetic. HIGHMEM frames (x86_32) have no view until kmap gives them one.</item>
/// <item>The vmalloc area (and on x86_32 the pkmap and fixmap areas) are PROT_NONE until their owners map frames
/// into them one page at a time with <see cref="MapFrames"/> and give them back with <see cref="UnmapRange"/>.</item>
/// <item>Kernel virtual addresses (what views and traces print) are computed per region: direct map from PAGE_OFFSET,
/// vmalloc from VMALLOC_START; on x86_32 the whole window is simply PAGE_OFFSET + offset.</item>
/// <item>Without memfd (non-Linux, or <see cref="MachineConfig.ForceNoMemfd"/>) RAM is one aligned native block that
/// is also the direct map; nothing else can be mapped, so vmalloc falls back to NOMMU semantics (physically contiguous).</item>
/// <item>A new memfd reads as zero, and so does a frame after <see cref="DiscardFrames"/>. One byte per frame records
/// whether the frame may have been written since (<see cref="MarkWritten"/>, which the page allocator calls for every
/// frame it hands out), so that __GFP_ZERO can skip clearing frames that are still zero: clearing them would make the
/// host fault in and zero a page only for kmem to zero it again. A frame is handed out to one owner at a time, so
/// the bytes need no atomics. The NOMMU block is not zeroed at boot: there every frame counts as written.</item>
/// </list>
/// </remarks>
public sealed unsafe class PhysicalMemory : IDisposable
{
    private const int PageSize = ArchProfile.PageSize;
    private int _memfd = -1;
    private nuint _windowSize;
    private void* _fallbackBlock;
    private byte* _written; // per frame: 0 = reads as zero (never handed out, or discarded since), 1 = may hold data

    public ArchProfile Profile { get; }
    public MemoryLayout Layout { get; }
    /// <summary>Host address of the start of the window (= the direct map of PFN 0).</summary>
    public byte* WindowBase { get; private set; }
    public nuint WindowSize => _windowSize;
    public bool HasMemfd => _memfd >= 0;
    public long MaxPfn => Layout.MaxPfn;
    public long LowmemPfnEnd => Layout.LowmemPfnEnd;

    /// <summary>Window offset and size of the vmalloc area (0 when NOMMU).</summary>
    public nuint VmallocOffset { get; }
    public nuint VmallocSize { get; }
    /// <summary>Kernel virtual address of VMALLOC_START / VMALLOC_END.</summary>
    public ulong VmallocStart { get; }
    public ulong VmallocEnd => VmallocStart + VmallocSize;
    /// <summary>Window offset of the persistent kmap area (x86_32), LAST_PKMAP pages.</summary>
    public nuint PkmapOffset { get; }
    /// <summary>Window offset of the fixmap area (x86_32; kmap_local slots live there).</summary>
    public nuint FixmapOffset { get; }
    /// <summary>Kernel virtual address of high_memory: the end of the direct map.</summary>
    public ulong HighMemory => Profile.PageOffset + (ulong)LowmemPfnEnd * PageSize;

    public PhysicalMemory(ArchProfile profile, MemoryLayout layout, ulong vmallocBytes, bool forceNoMemfd)
    {
        Profile = profile;
        Layout = layout;
        nuint ramBytes = (nuint)layout.MaxPfn * PageSize;
        nuint direct = (nuint)layout.LowmemPfnEnd * PageSize;

        if (profile.Arch == Arch.X86_32)
        {
            _windowSize = (nuint)(0x1_0000_0000UL - profile.PageOffset);
            VmallocStart = HighMemory + ArchProfile.X86_32_VmallocOffset;
            VmallocOffset = (nuint)(VmallocStart - profile.PageOffset);
            VmallocSize = (nuint)(ArchProfile.X86_32_VmallocEnd - VmallocStart);
            PkmapOffset = (nuint)(ArchProfile.X86_32_PkmapBase - profile.PageOffset);
            FixmapOffset = (nuint)(ArchProfile.X86_32_FixaddrStart - profile.PageOffset);
        }
        else
        {
            // Direct map, a 1 GiB hole (so that running off the direct map faults), then the vmalloc area.
            VmallocOffset = AlignUp(direct, 1UL << 30) + (nuint)(1UL << 30);
            VmallocSize = (nuint)vmallocBytes;
            VmallocStart = ArchProfile.X86_64_VmallocStart;
            _windowSize = VmallocOffset + VmallocSize + (nuint)(1UL << 21);
        }

        if (!forceNoMemfd && OperatingSystem.IsLinux() && TryCreateMemfd(ramBytes))
        {
            nint w = Libc.mmap(0, _windowSize, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_NORESERVE, -1, 0);
            if (w == Libc.MAP_FAILED)
            {
                Libc.close(_memfd);
                throw new KmemException($"kmem: cannot reserve a {_windowSize >> 20} MiB window: {Libc.LastError()}");
            }
            WindowBase = (byte*)w;
            if (direct > 0)
                MapFrames(WindowBase, 0, (long)(direct / PageSize));
        }
        else
        {
            // NOMMU fallback: RAM is one block, which is also the direct map; no vmalloc/pkmap remapping possible.
            _fallbackBlock = NativeMemory.AlignedAlloc(ramBytes, 1 << 21);
            WindowBase = (byte*)_fallbackBlock;
            _windowSize = ramBytes;
            VmallocSize = 0;
        }
        _written = (byte*)NativeMemory.AllocZeroed((nuint)Math.Max(layout.MaxPfn, 1));
        if (!HasMemfd)
            NativeMemory.Fill(_written, (nuint)layout.MaxPfn, 1);
    }

    /// <summary>Whether frame <paramref name="pfn"/> is known to read as zero (nothing was handed out there since boot or its last discard).</summary>
    public bool IsKnownZero(long pfn) => _written[pfn] == 0;

    /// <summary>Records that frames [pfn, pfn+pages) may be written from now on (their owner got them).</summary>
    public void MarkWritten(long pfn, long pages)
    {
        if (pages == 1) _written[pfn] = 1;
        else NativeMemory.Fill(_written + pfn, (nuint)pages, 1);
    }

    private bool TryCreateMemfd(nuint bytes)
    {
        ReadOnlySpan<byte> name = "kmem-ram\0"u8;
        fixed (byte* n = name)
        {
            int fd = Libc.memfd_create(n, Libc.MFD_CLOEXEC);
            if (fd < 0) return false;
            if (Libc.ftruncate(fd, (long)bytes) != 0)
            {
                Libc.close(fd);
                return false;
            }
            _memfd = fd;
            return true;
        }
    }

    private static nuint AlignUp(nuint v, ulong a) => (nuint)(((ulong)v + a - 1) & ~(a - 1));

    /// <summary>Map <paramref name="pages"/> consecutive frames starting at <paramref name="pfn"/> at host address <paramref name="at"/> (inside the window).</summary>
    public void MapFrames(byte* at, long pfn, long pages)
    {
        if (!HasMemfd) throw new InvalidOperationException("kmem: no memfd: this machine cannot remap frames (NOMMU)");
        CheckInWindow(at, (nuint)pages * PageSize);
        nint r = Libc.mmap((nint)at, (nuint)pages * PageSize, Libc.PROT_READ | Libc.PROT_WRITE,
            Libc.MAP_SHARED | Libc.MAP_FIXED, _memfd, pfn * PageSize);
        if (r != (nint)at) throw new KmemException($"kmem: mmap of pfn {pfn:x} at {(nint)at:x} failed: {Libc.LastError()}");
    }

    /// <summary>Return a range of the window to PROT_NONE (the frames themselves are untouched).</summary>
    public void UnmapRange(byte* at, nuint bytes)
    {
        if (!HasMemfd) return;
        CheckInWindow(at, bytes);
        nint r = Libc.mmap((nint)at, bytes, Libc.PROT_NONE, Libc.MAP_PRIVATE | Libc.MAP_ANONYMOUS | Libc.MAP_FIXED | Libc.MAP_NORESERVE, -1, 0);
        if (r != (nint)at) throw new KmemException($"kmem: unmapping {(nint)at:x} failed: {Libc.LastError()}");
    }

    private void CheckInWindow(byte* at, nuint bytes)
    {
        if (at < WindowBase || at + bytes > WindowBase + _windowSize || ((nint)at & (PageSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(at), $"kmem: {(nint)at:x}+{bytes:x} is not a page-aligned range of the window");
    }

    /// <summary>Is the host pointer inside the direct map?</summary>
    public bool IsDirectMapped(void* p) => (byte*)p >= WindowBase && (byte*)p < WindowBase + (nuint)LowmemPfnEnd * PageSize;

    /// <summary>Is the host pointer inside the vmalloc area?</summary>
    public bool IsVmallocAddress(void* p) => VmallocSize != 0 && (byte*)p >= WindowBase + VmallocOffset && (byte*)p < WindowBase + VmallocOffset + VmallocSize;

    /// <summary>The kernel virtual address Linux would print for a host pointer of this machine (0 for null).</summary>
    public ulong ToKernelVirtual(void* p)
    {
        if (p == null) return 0;
        nuint off = (nuint)((byte*)p - WindowBase);
        if (Profile.Arch == Arch.X86_64 && off >= VmallocOffset)
            return VmallocStart + (off - VmallocOffset);
        return Profile.PageOffset + off;
    }

    /// <summary>The host pointer for a kernel virtual address of this machine, or null when it is outside the window.</summary>
    public byte* FromKernelVirtual(ulong va)
    {
        if (Profile.Arch == Arch.X86_64 && va >= VmallocStart && va < VmallocStart + VmallocSize)
            return WindowBase + VmallocOffset + (nuint)(va - VmallocStart);
        if (va >= Profile.PageOffset && va - Profile.PageOffset < _windowSize)
            return WindowBase + (nuint)(va - Profile.PageOffset);
        return null;
    }

    /// <summary>Give the host memory behind frames back (they read as zero afterwards), e.g. when a machine's pages are scrubbed.</summary>
    public void DiscardFrames(long pfn, long pages)
    {
        const int FALLOC_FL_KEEP_SIZE = 1, FALLOC_FL_PUNCH_HOLE = 2;
        if (HasMemfd && Libc.fallocate(_memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, pfn * PageSize, pages * PageSize) == 0)
            NativeMemory.Clear(_written + pfn, (nuint)pages);
    }

    public void Dispose()
    {
        if (WindowBase == null) return;
        NativeMemory.Free(_written);
        _written = null;
        if (_fallbackBlock != null)
        {
            NativeMemory.AlignedFree(_fallbackBlock);
            _fallbackBlock = null;
        }
        else
        {
            Libc.munmap((nint)WindowBase, _windowSize);
            Libc.close(_memfd);
            _memfd = -1;
        }
        WindowBase = null;
    }
}
