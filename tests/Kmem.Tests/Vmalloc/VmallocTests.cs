using System.Text.RegularExpressions;
using Kmem.PageAlloc;
using Kmem.Proc;
using Kmem.Vmalloc;

namespace Kmem.Tests.Vmalloc;

using Gfp = global::Kmem.Gfp;

public unsafe class VmallocTests
{
    internal static Machine Boot64(long ram = 256L << 20) => Machine.Boot(new MachineConfig { RamBytes = ram });

    /// <summary>x86_32 with 1 GiB: lowmem is MAXMEM, the rest HIGHMEM; the vmalloc area is the reserve minus 8 MiB.</summary>
    internal static Machine Boot32(ulong vmalloc = 128UL << 20, long ram = 1L << 30) =>
        Machine.Boot(new MachineConfig { Profile = ArchProfile.X86_32, RamBytes = ram, VmallocBytes = vmalloc });

    /// <summary>Every page back in the page allocator, no busy area, trees consistent.</summary>
    internal static void AssertNothingLeaked(Machine m)
    {
        m.Vmalloc.FlushDeferred();
        m.Vmalloc.PurgeVmapAreaLazy();
        Assert.Null(m.Vmalloc.CheckInvariants());
        Assert.Equal(0, m.Vmalloc.BusyAreas);
        Assert.Equal(0, m.Vmalloc.NrVmallocPages);
        m.Slab.ShrinkAll(); // empty slabs kept by kmalloc caches (kvmalloc's kmalloc side) go back too
        m.Pages.DrainAllPages();
        Assert.Equal(m.TotalRamPages, m.FreePages);
        if (!m.Vmalloc.IsNommu) Assert.Equal(1, m.Vmalloc.FreeRanges); // everything merged back into one range
    }

    /// <summary>Fragment memory: take 2n order-0 pages and give back every other one, so order-0 allocations are scattered.</summary>
    private static List<nint> Fragment(Machine m, int n, Gfp gfp)
    {
        var keep = new List<nint>();
        var all = new List<nint>();
        for (int i = 0; i < 2 * n; i++) all.Add((nint)m.Pages.AllocPages(gfp, 0));
        all.Sort();
        for (int i = 0; i < all.Count; i++)
        {
            if (i % 2 == 0) keep.Add(all[i]);
            else m.Pages.FreePages((PageFrame*)all[i], 0);
        }
        return keep;
    }

    [Fact]
    public void BytesWrittenThroughVmallocReadBackThroughEachFramesDirectMap_FramesScatteredAreaContiguous()
    {
        using var m = Boot64();
        using var pin = Cpu.Pin(0);
        var held = Fragment(m, 256, Gfp.Kernel);
        const int pages = 64;
        byte* p = m.Vmalloc.Vmalloc(pages * 4096);
        Assert.True(p != null);
        Assert.True(m.Vmalloc.IsVmallocAddr(p));
        for (int i = 0; i < pages * 4096; i++) p[i] = (byte)(i * 7 + i / 4096);
        int discontiguous = 0;
        long prevPfn = -1;
        for (int i = 0; i < pages; i++)
        {
            PageFrame* page = m.Vmalloc.VmallocToPage(p + i * 4096 + 123);
            Assert.True(page != null);
            Assert.True(page->Has(PageFlags.Vmalloc));
            long pfn = m.MemMap.PageToPfn(page);
            Assert.Equal(pfn, m.Vmalloc.VmallocToPfn(p + i * 4096));
            if (prevPfn >= 0 && pfn != prevPfn + 1) discontiguous++;
            prevPfn = pfn;
            byte* direct = m.MemMap.PageAddress(page);
            Assert.True(direct != null && direct != p + i * 4096);
            for (int b = 0; b < 4096; b++) Assert.Equal((byte)((i * 4096 + b) * 7 + i), direct[b]);
            direct[0] = 0xEE; // and the other way round
            Assert.Equal(0xEE, p[i * 4096]);
        }
        Assert.True(discontiguous >= pages / 2, $"only {discontiguous} discontinuities: frames were not scattered");
        Assert.True(m.Vmalloc.VmallocToPage(p + pages * 4096) == null); // the guard page has no frame
        var vm = m.Vmalloc.FindVmArea(p + 5000)!.Value;
        Assert.Equal((nint)p, vm.Addr);
        Assert.Equal((ulong)(pages + 1) * 4096, vm.Size);
        Assert.Equal(pages, vm.NrPages);
        Assert.Equal(nameof(BytesWrittenThroughVmallocReadBackThroughEachFramesDirectMap_FramesScatteredAreaContiguous), vm.Caller);
        Assert.Equal(pages, m.Stat[Diagnostics.VmItem.NrVmallocPages]);
        m.Vmalloc.Vfree(p);
        foreach (var h in held) m.Pages.FreePages((PageFrame*)h, 0);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void X86_32_VmallocUsesHighmemFrames_ReadBackThroughKmap()
    {
        using var m = Boot32();
        const int pages = 32;
        byte* p = m.Vmalloc.Vzalloc(pages * 4096);
        Assert.True(p != null);
        ulong kva = m.Physical.ToKernelVirtual(p);
        Assert.InRange(kva, m.Physical.VmallocStart, ArchProfile.X86_32_VmallocEnd - 1);
        for (int i = 0; i < pages * 4096; i++) Assert.Equal(0, p[i]);
        for (int i = 0; i < pages; i++) p[i * 4096 + 9] = (byte)(i + 1);
        var km = m.Vmalloc.Highmem;
        for (int i = 0; i < pages; i++)
        {
            PageFrame* page = m.Vmalloc.VmallocToPage(p + i * 4096);
            Assert.True(page->Has(PageFlags.HighMem));
            Assert.True(m.MemMap.PageAddress(page) == null);
            byte* k = km.Kmap(page);
            ulong kk = m.Physical.ToKernelVirtual(k);
            Assert.InRange(kk, ArchProfile.X86_32_PkmapBase, ArchProfile.X86_32_PkmapBase + 1024 * 4096 - 1);
            Assert.Equal((byte)(i + 1), k[9]);
            Assert.True(km.PageAddress(page) == k);
            km.Kunmap(page);
        }
        m.Vmalloc.Vfree(p);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void Vmalloc32_OnX86_64_UsesFramesBelow4GiB()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 6L << 30 });
        byte* p = m.Vmalloc.Vmalloc32(16 * 4096);
        for (int i = 0; i < 16; i++)
            Assert.True(m.Vmalloc.VmallocToPfn(p + i * 4096) < ArchProfile.Dma32PfnLimit);
        byte* q = m.Vmalloc.Vmalloc(4096);
        m.Vmalloc.Vfree(p);
        m.Vmalloc.Vfree(q);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void WindowExhaustionOnX86_32_ReportsWhileRamIsFree()
    {
        // vmalloc=32M: the area is 32 MiB - VMALLOC_OFFSET (8 MiB) = 24 MiB, minus rounding: VMALLOC_START = high_memory + 8 MiB.
        using var m = Boot32(vmalloc: 32UL << 20);
        ulong area = m.Physical.VmallocSize;
        Assert.Equal((24UL << 20), area);
        byte* a = m.Vmalloc.Vmalloc(16 << 20);
        Assert.True(a != null);
        byte* b = m.Vmalloc.Vmalloc(16 << 20, "exhaust_window");
        Assert.True(b == null);
        Assert.True(m.FreePages > (64L << 20) / 4096, "plenty of RAM is still free");
        Assert.True(m.Log.Contains($"vmap allocation for size {(16 << 20) + 4096} failed: use vmalloc=<size> to increase size"));
        Assert.True(m.Log.Contains($"vmalloc error: size {16 << 20}, vm_struct allocation failed, mode:0xcc0(GFP_KERNEL), nodemask=(null)"));
        // Consistent state: smaller areas still fit, and all is returned.
        byte* c = m.Vmalloc.Vmalloc(4 << 20);
        Assert.True(c != null);
        m.Vmalloc.Vfree(a);
        m.Vmalloc.Vfree(c);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void LowestAddressFit_Merging_AndLazyPurge()
    {
        using var m = Boot64();
        var vm = m.Vmalloc;
        var ptrs = new List<nint>();
        for (int i = 0; i < 10; i++) ptrs.Add((nint)vm.Vmalloc(4096 * 3)); // 3 pages + guard = 16 KiB each
        for (int i = 1; i < ptrs.Count; i++) Assert.Equal(ptrs[i - 1] + 16384, ptrs[i]); // lowest fit packs them
        vm.Vfree((void*)ptrs[3]);
        Assert.Contains("unpurged vm_area", ProcViews.Render(m, "vmallocinfo"));
        // The freed range is lazy: not reusable until purged, so the next area goes past the last one.
        byte* next = vm.Vmalloc(4096 * 3);
        Assert.Equal(ptrs[9] + 16384, (nint)next);
        vm.PurgeVmapAreaLazy();
        byte* hole = vm.Vmalloc(4096 * 3);
        Assert.Equal(ptrs[3], (nint)hole); // lowest address fit reuses the purged hole
        Assert.Null(vm.CheckInvariants());
        vm.Vfree(hole);
        vm.Vfree(next);
        foreach (var p in ptrs.Where((_, i) => i != 3)) vm.Vfree((void*)p);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void LazyPurgeRunsAfterLazyMaxPages()
    {
        using var m = Boot64();
        var vm = m.Vmalloc;
        Assert.Equal(2 * (32L << 20) / 4096, vm.LazyMaxPages); // fls(2) = 2
        long purges = vm.Purges;
        for (int i = 0; i < 5000; i++) vm.Vfree(vm.Vmalloc(4 * 4096)); // 5 lazy pages each: 25000 > 16384
        Assert.Equal(purges + 1, vm.Purges);
        Assert.InRange(vm.LazyPages, 1, vm.LazyMaxPages);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void AlignedAllocations_AndImpossibleAlignmentsFail()
    {
        using var m = Boot64();
        var vm = m.Vmalloc;
        byte* small = vm.Vmalloc(4096);
        for (int shift = 12; shift <= 30; shift += 3)
        {
            byte* p = vm.VmallocNode(3 * 4096, 1UL << shift, Gfp.Kernel | Gfp.Zero);
            Assert.True(p != null);
            Assert.Equal(0UL, m.Physical.ToKernelVirtual(p) & ((1UL << shift) - 1));
            vm.Vfree(p);
        }
        // align_shift_alloc_test: alignments beyond the window cannot be met.
        Assert.True(vm.VmallocNode(4096, 1UL << 62, Gfp.Kernel | Gfp.NoWarn) == null);
        Assert.True(vm.VmallocNode(4096, 1UL << 63, Gfp.Kernel | Gfp.NoWarn) == null);
        vm.Vfree(small);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void NoStaleMappingAfterAFrameIsReused()
    {
        using var m = Boot64();
        using var pin = Cpu.Pin(1);
        byte* p = m.Vmalloc.Vmalloc(4096);
        p[0] = 0x5A;
        long pfn = m.Vmalloc.VmallocToPfn(p);
        m.Vmalloc.Vfree(p);
        // The frame went back to this CPU's pcp list head: the next order-0 allocation gets it again.
        PageFrame* again = m.Pages.AllocPages(Gfp.Kernel, 0);
        Assert.Equal(pfn, m.MemMap.PageToPfn(again));
        byte* direct = m.MemMap.PageAddress(again);
        Assert.Equal(0x5A, direct[0]);
        direct[0] = 0x77;
        // The old vmalloc address no longer reaches the frame: no PTE, and the host mapping is PROT_NONE anonymous.
        Assert.True(m.Vmalloc.VmallocToPage(p) == null);
        Assert.StartsWith("---p", HostMapping((nint)p));
        Assert.StartsWith("rw-s", HostMapping((nint)direct));
        m.Pages.FreePages(again, 0);
        AssertNothingLeaked(m);
    }

    /// <summary>The permissions column of /proc/self/maps for the mapping containing <paramref name="addr"/>.</summary>
    internal static string HostMapping(nint addr)
    {
        foreach (var line in File.ReadLines("/proc/self/maps"))
        {
            int dash = line.IndexOf('-'), sp = line.IndexOf(' ');
            ulong lo = Convert.ToUInt64(line[..dash], 16), hi = Convert.ToUInt64(line[(dash + 1)..sp], 16);
            if ((ulong)addr >= lo && (ulong)addr < hi) return line[(sp + 1)..];
        }
        return "unmapped";
    }

    [Fact]
    public void Vmap_MapsCallerFramesAndVunmapLeavesThemToTheCaller()
    {
        using var m = Boot64();
        var frames = new nint[5];
        for (int i = 0; i < 5; i++)
        {
            frames[i] = (nint)m.Pages.AllocPages(Gfp.Kernel, 0);
            m.MemMap.PageAddress((PageFrame*)frames[i])[0] = (byte)(0x10 + i);
        }
        byte* v = m.Vmalloc.Vmap(frames);
        for (int i = 0; i < 5; i++)
        {
            Assert.Equal((byte)(0x10 + i), v[i * 4096]);
            Assert.Equal(frames[i], (nint)m.Vmalloc.VmallocToPage(v + i * 4096));
        }
        string info = m.Vmalloc.VmallocInfo();
        Assert.Matches(@"0x[0-9a-f]{16}-0x[0-9a-f]{16}   24576 Vmap_MapsCallerFramesAndVunmapLeavesThemToTheCaller vmap\n", info);
        Assert.Throws<KmemException>(() => m.Vmalloc.Vunmap(v + 4096)); // not the start
        m.Vmalloc.Vunmap(v);
        Assert.Equal(0x10, m.MemMap.PageAddress((PageFrame*)frames[0])[0]);
        foreach (var f in frames) m.Pages.FreePages((PageFrame*)f, 0);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void BadFrees_AreReported_AndLeaveStateConsistent()
    {
        using var m = Boot64();
        var vm = m.Vmalloc;
        byte* p = vm.Vmalloc(3 * 4096);
        byte* lowmem = m.MemMap.PageAddress(m.Pages.AllocPages(Gfp.Kernel, 0));
        var e1 = Assert.Throws<KmemException>(() => vm.Vfree(lowmem));
        Assert.Contains("Trying to vfree() nonexistent vm area (0xffff888", e1.Report);
        var e2 = Assert.Throws<KmemException>(() => vm.Vfree(p + 4096));
        Assert.Contains("Trying to vfree() bad address", e2.Report);
        Assert.True(m.Log.Contains("Trying to vfree() nonexistent vm area"));
        byte* q = vm.Vmalloc(4096);
        Assert.Throws<KmemException>(() => vm.Vunmap(q)); // would leak the vmalloc pages
        vm.Vfree(p);
        var e3 = Assert.Throws<KmemException>(() => vm.Vfree(p)); // double vfree
        Assert.Contains("nonexistent vm area", e3.Report);
        vm.Vfree(null);
        vm.Vfree(q);
        Assert.True(vm.Vmalloc(0) == null);
        m.Pages.FreePages(lowmem, 0);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void VfreeAtomic_DefersTheFreeToWork()
    {
        using var m = Boot64();
        var vm = m.Vmalloc;
        var ptrs = new nint[64];
        for (int i = 0; i < ptrs.Length; i++) ptrs[i] = (nint)vm.Vmalloc(2 * 4096);
        // "Atomic context": a thread that must not block hands every area to vfree_atomic.
        var t = new Thread(() =>
        {
            foreach (var p in ptrs) vm.VfreeAtomic((void*)p);
        });
        t.Start();
        t.Join();
        vm.FlushDeferred(); // flush_work
        Assert.Equal(0, vm.BusyAreas);
        Assert.Equal(0, vm.NrVmallocPages);
        // A bad address is rejected up front, before anything is queued.
        PageFrame* page = m.Pages.AllocPages(Gfp.Kernel, 0);
        Assert.Throws<KmemException>(() => vm.VfreeAtomic(m.MemMap.PageAddress(page)));
        m.Pages.FreePages(page, 0);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void TwoThreadStress_TaggedContentsSurvive_NothingLeaks()
    {
        using var m = Boot64(512L << 20);
        var vm = m.Vmalloc;
        var errors = new List<string>();
        void Worker(int id)
        {
            using var pin = Cpu.Pin(id);
            var rng = new Random(id + 1);
            var live = new List<(nint P, int Pages, int Tag)>();
            for (int op = 0; op < 4000; op++)
            {
                if (live.Count < 200 && (live.Count == 0 || rng.Next(100) < 55))
                {
                    int pages = rng.Next(1, 17);
                    byte* p = rng.Next(4) == 0 ? vm.Vzalloc((nuint)(pages * 4096)) : vm.Vmalloc((nuint)(pages * 4096));
                    if (p == null) { lock (errors) errors.Add($"thread {id}: vmalloc failed"); return; }
                    int tag = (id << 24) | op;
                    for (int i = 0; i < pages; i++) *(int*)(p + i * 4096 + 100) = tag + i;
                    live.Add(((nint)p, pages, tag));
                }
                else
                {
                    int k = rng.Next(live.Count);
                    var (p, pages, tag) = live[k];
                    live[k] = live[^1];
                    live.RemoveAt(live.Count - 1);
                    for (int i = 0; i < pages; i++)
                        if (*(int*)((byte*)p + i * 4096 + 100) != tag + i) { lock (errors) errors.Add($"thread {id}: area {p:x} page {i} overwritten"); }
                    if (rng.Next(8) == 0) vm.VfreeAtomic((void*)p); else vm.Vfree((void*)p);
                }
            }
            foreach (var (p, _, _) in live) vm.Vfree((void*)p);
        }
        var threads = new[] { new Thread(() => Worker(0)), new Thread(() => Worker(1)) };
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.Empty(errors);
        AssertNothingLeaked(m);
    }

    [Fact]
    public void Vmallocinfo_FormatMatchesLinux_OnBothProfiles()
    {
        var line = new Regex(@"^0x(?<a>[0-9a-f]+)-0x(?<b>[0-9a-f]+) +(?<size>\d+) (?<rest>.*)$");
        foreach (var (m, digits) in new[] { (Boot64(), 16), (Boot32(), 8) })
        {
            using (m)
            {
                byte* a = m.Vmalloc.Vmalloc(4 * 4096, "kernel_clone+0xb8/0x400");
                byte* u = m.Vmalloc.VmallocUser(4096, "bpf_map_area_alloc");
                byte* big = m.Vmalloc.Vmalloc((nuint)(2000 * 4096), "alloc_large_system_hash");
                byte* gone = m.Vmalloc.Vmalloc(4096, "gone");
                m.Vmalloc.Vfree(gone);
                string[] lines = m.Vmalloc.VmallocInfo().TrimEnd('\n').Split('\n');
                Assert.Equal(4, lines.Length);
                foreach (var l in lines)
                {
                    var mm = line.Match(l);
                    Assert.True(mm.Success, l);
                    Assert.Equal(digits, mm.Groups["a"].Length);
                    Assert.Equal(digits, mm.Groups["b"].Length);
                    Assert.Equal(Convert.ToUInt64(mm.Groups["b"].Value, 16) - Convert.ToUInt64(mm.Groups["a"].Value, 16), ulong.Parse(mm.Groups["size"].Value));
                }
                // Same shape as the real kernel's line: "0x…-0x…   20480 kernel_clone+0xb8/0x400 pages=4 vmalloc N0=4"
                Assert.EndsWith("   20480 kernel_clone+0xb8/0x400 pages=4 vmalloc N0=4", lines[0]);
                Assert.EndsWith("    8192 bpf_map_area_alloc pages=1 vmalloc user N0=1", lines[1]);
                Assert.EndsWith($"8196096 alloc_large_system_hash pages=2000 vmalloc vpages N0=2000", lines[2]);
                Assert.EndsWith("    8192 unpurged vm_area", lines[3]);
                string meminfo = ProcViews.Render(m, "meminfo");
                Assert.Matches($@"VmallocTotal:\s+{m.Physical.VmallocSize >> 10} kB", meminfo);
                Assert.Matches($@"VmallocUsed:\s+{2005 * 4} kB", meminfo);
                m.Vmalloc.Vfree(a);
                m.Vmalloc.Vfree(u);
                m.Vmalloc.Vfree(big);
                AssertNothingLeaked(m);
            }
        }
        // And the real kernel's sample parses with the same pattern.
        foreach (var l in File.ReadLines(Path.Combine(TestData.SharedDir, "linux-proc", "vmallocinfo.txt")))
            Assert.Matches(line, l);
    }

    [Fact]
    public void Nommu_VmallocIsPhysicallyContiguous()
    {
        using var m = Machine.Boot(new MachineConfig { RamBytes = 128L << 20, ForceNoMemfd = true });
        var vm = m.Vmalloc;
        Assert.True(vm.IsNommu);
        byte* p = vm.Vzalloc(5 * 4096);
        Assert.True(p != null);
        Assert.False(vm.IsVmallocAddr(p));
        long pfn0 = m.MemMap.PageToPfn(vm.VmallocToPage(p));
        for (int i = 1; i < 5; i++) Assert.Equal(pfn0 + i, m.MemMap.PageToPfn(vm.VmallocToPage(p + i * 4096)));
        Assert.Equal(8, vm.NrVmallocPages); // get_order(5 pages) = 3
        Assert.Throws<KmemException>(() => vm.Vfree(p + 4096));
        vm.Vfree(p);
        AssertNothingLeaked(m);
    }
}

public unsafe class VmallocGcFreeTests
{
    [Fact]
    public void SteadyStateVmallocVfreeAndKmapAllocateNoManagedMemory()
    {
        using var m = VmallocTests.Boot32();
        var vm = m.Vmalloc;
        PageFrame* high = m.Pages.AllocPages(Gfp.HighUser, 0);
        void Round()
        {
            for (int i = 0; i < 3000; i++) // crosses lazy_max_pages: includes purges
            {
                byte* p = vm.Vmalloc((nuint)((i % 7 + 1) * 4096));
                *p = 1;
                vm.Vfree(p);
                byte* k = vm.Highmem.Kmap(high);
                vm.Highmem.Kunmap(high);
                byte* l = vm.Highmem.KmapLocalPage(high);
                vm.Highmem.KunmapLocal(l);
                _ = k;
            }
        }
        Round(); // warm: pool chunks, JIT
        long before = GC.GetAllocatedBytesForCurrentThread();
        Round();
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(0, allocated);
        m.Pages.FreePages(high, 0);
        VmallocTests.AssertNothingLeaked(m);
    }
}
