using Kmem.PageAlloc;
using Kmem.Proc;

namespace Kmem.Scenario;

/// <summary>
/// The vmalloc part of <c>kmem run</c>: module-load-like areas and thread stacks, their /proc/vmallocinfo and
/// meminfo lines, unloads leaving unpurged ranges, a purge; on x86_32 HIGHMEM frames behind vmalloc, kmap and
/// kmap_local of HIGHMEM pages, and the window running out while RAM is free. Frees everything it took.
/// </summary>
public static unsafe class VmallocScenario
{
    /// <summary>Module core sizes in the range real modules have (lsmod's size column), for a plausible load sequence.</summary>
    public static readonly (string Name, int Bytes)[] Modules =
    [
        ("ext4", 1_105_920), ("xfs", 2_539_520), ("nf_tables", 376_832), ("e1000e", 348_160), ("snd_hda_codec", 204_800),
        ("kvm", 1_409_024), ("bluetooth", 1_040_384), ("loop", 40_960), ("fuse", 212_992), ("overlay", 221_184),
    ];

    /// <summary>Run against a booted machine; returns 0 when everything was returned and the allocator is consistent.</summary>
    public static int Run(Machine m, TextWriter w)
    {
        var vm = m.Vmalloc;
        w.WriteLine();
        if (vm.IsNommu)
        {
            w.WriteLine("vmalloc: no memfd mappings (NOMMU): vmalloc hands out physically contiguous blocks.");
        }
        w.WriteLine($"vmalloc area 0x{vm.Start.ToString(Hex(m))}-0x{vm.End.ToString(Hex(m))} ({(vm.End - vm.Start) >> 20} MiB), lazy_max_pages {vm.LazyMaxPages}");
        var modules = new List<nint>();
        foreach (var (name, bytes) in Modules)
        {
            byte* p = vm.VmallocGfp((nuint)bytes, Gfp.Kernel, "execmem_vmalloc");
            if (p == null) continue;
            new Span<byte>(p, bytes).Fill(0xCC); // "copy the module image in"
            modules.Add((nint)p);
            w.WriteLine($"  load_module {name,-14} {bytes,9} bytes at 0x{m.Physical.ToKernelVirtual(p).ToString(Hex(m))}");
        }
        var stacks = new List<nint>();
        for (int i = 0; i < 8; i++) stacks.Add((nint)vm.Vmalloc(16 << 10, "kernel_clone"));
        w.WriteLine();
        w.WriteLine("/proc/vmallocinfo:");
        w.Write(ProcViews.Render(m, "vmallocinfo"));
        w.Write(MeminfoVmalloc(m));

        for (int i = 0; i < modules.Count; i += 2) vm.Vfree((void*)modules[i]);
        w.WriteLine();
        w.WriteLine($"after unloading every other module: {vm.LazyPages} pages of address range wait for the purge (frames already freed):");
        foreach (var line in ProcViews.Render(m, "vmallocinfo").Split('\n'))
            if (line.Contains("unpurged")) w.WriteLine(line);
        vm.PurgeVmapAreaLazy();
        w.WriteLine($"after purge_vmap_area_lazy: {vm.FreeRanges} free ranges, {vm.BusyAreas} busy areas");

        if (m.Profile.Arch == Arch.X86_32) Highmem32(m, w);

        for (int i = 1; i < modules.Count; i += 2) vm.Vfree((void*)modules[i]);
        foreach (var s in stacks) vm.Vfree((void*)s);
        vm.FlushDeferred();
        vm.PurgeVmapAreaLazy();
        m.Pages.DrainAllPages();
        string? broken = vm.CheckInvariants();
        w.WriteLine($"vmalloc: {vm.BusyAreas} areas and {vm.NrVmallocPages} pages left; vmap trees {(broken == null ? "consistent" : "BROKEN: " + broken)}");
        return broken == null && vm.BusyAreas == 0 && vm.NrVmallocPages == 0 ? 0 : 1;
    }

    /// <summary>x86_32 only: vmalloc backed by HIGHMEM frames, kmap and kmap_local, and the vmalloc window running out while RAM is free.</summary>
    public static void Highmem32(Machine m, TextWriter w)
    {
        var vm = m.Vmalloc;
        var km = vm.Highmem;
        w.WriteLine();
        Zone? high = m.Pages.GetZone(ZoneType.HighMem);
        if (high == null)
        {
            w.WriteLine("x86_32: no HIGHMEM (all RAM fits below MAXMEM); boot with --ram 2G to see it.");
        }
        else
        {
            byte* buf = vm.Vmalloc(64 * 4096, "highmem_demo");
            int highFrames = 0;
            for (int i = 0; i < 64; i++)
                if (vm.VmallocToPage(buf + i * 4096)->Has(PageFlags.HighMem)) highFrames++;
            w.WriteLine($"x86_32: a 64-page vmalloc got {highFrames} HIGHMEM frames (no permanent mapping; page_address is null)");
            var pages = new List<nint>();
            for (int i = 0; i < 64; i++)
            {
                PageFrame* p = m.Pages.AllocPages(Gfp.HighUser, 0);
                byte* a = km.Kmap(p);
                a[0] = (byte)i;
                pages.Add((nint)p);
            }
            w.WriteLine($"  kmap of 64 HIGHMEM pages: {km.PkmapInUse} of {Kmem.HighMem.Highmem.LastPkmap} pkmap slots in use at 0x{ArchProfile.X86_32_PkmapBase:x8}");
            byte* l1 = km.KmapLocalPage((PageFrame*)pages[0]);
            byte* l2 = km.KmapLocalPage((PageFrame*)pages[1]);
            w.WriteLine($"  kmap_local nested: 0x{m.Physical.ToKernelVirtual(l1):x8}, 0x{m.Physical.ToKernelVirtual(l2):x8} (fixmap, per CPU, stack order)");
            try { km.KunmapLocal(l1); }
            catch (KmemException e) { w.WriteLine("  releasing out of order is reported: " + e.Message[..Math.Min(e.Message.Length, 100)] + "..."); }
            km.KunmapLocal(l2);
            km.KunmapLocal(l1);
            foreach (var p in pages)
            {
                km.Kunmap((PageFrame*)p);
                m.Pages.FreePages((PageFrame*)p, 0);
            }
            vm.Vfree(buf);
        }

        // The window: fill it with 4 MiB areas until it runs out, if RAM can outlast it.
        long windowPages = (long)((vm.End - vm.Start) >> ArchProfile.PageShift);
        if (windowPages > m.FreePages * 8 / 10)
        {
            w.WriteLine($"x86_32: the {windowPages >> 8} MiB vmalloc window is larger than free RAM; boot with --ram 2G (or --vmalloc 64M) to see it run out first.");
            return;
        }
        var chunks = new List<nint>();
        long logBefore = m.Log.Count;
        byte* c;
        while ((c = vm.Vmalloc(4 << 20, "exhaust_window")) != null) chunks.Add((nint)c);
        w.WriteLine($"x86_32: window exhausted after {chunks.Count} x 4 MiB areas, with {m.FreePages * 4 / 1024} MiB of RAM still free:");
        foreach (var line in m.Log.Lines.Skip((int)Math.Max(0, m.Log.Lines.Count - (m.Log.Count - logBefore))))
            w.WriteLine("  " + line.Split('\n')[0]);
        w.Write(MeminfoVmalloc(m));
        foreach (var p in chunks) vm.Vfree((void*)p);
    }

    private static string MeminfoVmalloc(Machine m) =>
        string.Concat(ProcViews.Render(m, "meminfo").Split('\n').Where(l => l.StartsWith("Vmalloc", StringComparison.Ordinal) || l.StartsWith("High", StringComparison.Ordinal) || l.StartsWith("Low", StringComparison.Ordinal)).Select(l => l + "\n"));

    private static string Hex(Machine m) => m.Profile.AddressHexDigits == 8 ? "x8" : "x16";
}
