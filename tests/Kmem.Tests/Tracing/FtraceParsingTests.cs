using System.Text;
using Kmem.Tracing;

namespace Kmem.Tests.Tracing;

using Gfp = global::Kmem.Gfp;

/// <summary>One line of each event kind, parsed through the public reader. Lines marked "real" are copied from
/// shared/traces/forkexec.trace.zst; the others are built from the Linux 6.18 TP_printk formats.</summary>
public class FtraceParsingTests
{
    internal static (TraceEvent Event, FtraceReader Reader) ParseOne(string line)
    {
        var reader = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(line + "\n")), "test.trace",
            TraceCompression.None);
        Assert.True(reader.TryRead(out TraceEvent ev), "no event parsed");
        Assert.False(reader.TryRead(out _));
        return (ev, reader);
    }

    [Fact]
    public void Kmalloc_real()
    {
        var (ev, r) = ParseOne(" capture-kmem-tr-4902    [000] .....  5860.231531: kmalloc: call_site=lsm_blob_alloc+0x3b/0x60 ptr=00000000856261bf bytes_req=11 bytes_alloc=16 gfp_flags=GFP_KERNEL_ACCOUNT|__GFP_ZERO node=-1 accounted=true");
        Assert.Equal(EventKind.Kmalloc, ev.Kind);
        Assert.Equal("capture-kmem-tr", r.Strings[ev.CommId]);
        Assert.Equal(4902, ev.Pid);
        Assert.Equal(0, ev.Cpu);
        Assert.Equal(5860_231531L, ev.TimestampUs);
        Assert.Equal("lsm_blob_alloc+0x3b/0x60", r.Strings[ev.CallSiteId]);
        Assert.Equal(0x856261bfUL, ev.Ptr);
        Assert.Equal(11, ev.BytesReq);
        Assert.Equal(16, ev.BytesAlloc);
        Assert.Equal(Gfp.KernelAccount | Gfp.Zero, ev.Gfp);
        Assert.Equal("GFP_KERNEL_ACCOUNT|__GFP_ZERO", r.Strings[ev.GfpTextId]);
        Assert.Equal(-1, ev.Node);
        Assert.True(ev.Accounted);
        Assert.Equal(0, ev.CacheNameId);
        Assert.False(ev.IsAtomic);
        Assert.Equal(1, ev.Line);
    }

    [Fact]
    public void KmemCacheAlloc_real()
    {
        var (ev, r) = ParseOne(" capture-kmem-tr-4902    [000] .....  5860.231332: kmem_cache_alloc: call_site=getname_flags.part.0+0x24/0x1f0 ptr=00000000ab5e99bd name=names_cache bytes_req=4096 bytes_alloc=4096 gfp_flags=GFP_KERNEL node=-1 accounted=false");
        Assert.Equal(EventKind.KmemCacheAlloc, ev.Kind);
        Assert.Equal("getname_flags.part.0+0x24/0x1f0", r.Strings[ev.CallSiteId]);
        Assert.Equal(0xab5e99bdUL, ev.Ptr);
        Assert.Equal("names_cache", r.Strings[ev.CacheNameId]);
        Assert.Equal(4096, ev.BytesReq);
        Assert.Equal(4096, ev.BytesAlloc);
        Assert.Equal(Gfp.Kernel, ev.Gfp);
        Assert.False(ev.Accounted);
    }

    [Fact]
    public void Kfree_real_including_null()
    {
        var (ev, r) = ParseOne(" capture-kmem-tr-4902    [000] .....  5860.231616: kfree: call_site=ida_alloc_range+0x39b/0x400 ptr=0000000000000000");
        Assert.Equal(EventKind.Kfree, ev.Kind);
        Assert.Equal("ida_alloc_range+0x39b/0x400", r.Strings[ev.CallSiteId]);
        Assert.Equal(0UL, ev.Ptr);

        (ev, _) = ParseOne(" capture-kmem-tr-4904    [000] .....  5860.234311: kfree: call_site=load_elf_binary+0x1bc/0x1870 ptr=0000000024220830");
        Assert.Equal(0x24220830UL, ev.Ptr);
    }

    [Fact]
    public void KmemCacheFree_real()
    {
        var (ev, r) = ParseOne(" capture-kmem-tr-4902    [000] .....  5860.231215: kmem_cache_free: call_site=__fput+0x141/0x2a0 ptr=000000008b5ede01 name=lsm_file_cache");
        Assert.Equal(EventKind.KmemCacheFree, ev.Kind);
        Assert.Equal("__fput+0x141/0x2a0", r.Strings[ev.CallSiteId]);
        Assert.Equal(0x8b5ede01UL, ev.Ptr);
        Assert.Equal("lsm_file_cache", r.Strings[ev.CacheNameId]);
    }

    [Fact]
    public void MmPageAlloc_real()
    {
        var (ev, r) = ParseOne(" capture-kmem-tr-4902    [000] .....  5860.231443: mm_page_alloc: page=000000000dd5e6ca pfn=0x18cc60 order=0 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP");
        Assert.Equal(EventKind.MmPageAlloc, ev.Kind);
        Assert.Equal(0xdd5e6caUL, ev.Ptr);
        Assert.Equal(0x18cc60UL, ev.Pfn);
        Assert.Equal(0, ev.Order);
        Assert.Equal((int)MigrateType.Movable, ev.MigrateType);
        Assert.Equal(Gfp.HighUserMovable | Gfp.Zero | Gfp.Comp, ev.Gfp);
        Assert.Equal("GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP", r.Strings[ev.GfpTextId]);
    }

    [Fact]
    public void MmPageFree_and_batched_real()
    {
        var (ev, _) = ParseOne(" capture-kmem-tr-4904    [000] .....  5860.235242: mm_page_free: page=0000000022ffdcb8 pfn=0x134622 order=0");
        Assert.Equal(EventKind.MmPageFree, ev.Kind);
        Assert.Equal(0x134622UL, ev.Pfn);
        Assert.Equal(0, ev.Order);

        (ev, _) = ParseOne(" capture-kmem-tr-4904    [000] ...2.  5860.235243: mm_page_free_batched: page=0000000022ffdcb8 pfn=0x134622 order=0");
        Assert.Equal(EventKind.MmPageFreeBatched, ev.Kind);
        Assert.Equal(0x22ffdcb8UL, ev.Ptr);
        Assert.Equal(0x134622UL, ev.Pfn);
        Assert.Equal(2, ev.PreemptDepth);
        Assert.True(ev.IsAtomic);
    }

    [Fact]
    public void Vmalloc_events()
    {
        // real
        var (ev, r) = ParseOne("            bash-4904    [000] .....  5860.242805: alloc_vmap_area: va_start: 18446683600640114688 size=20480 align=16384 vstart=0xffffc90000000000 vend=0xffffe8ffffffffff failed=0");
        Assert.Equal(EventKind.AllocVmapArea, ev.Kind);
        Assert.Equal("bash", r.Strings[ev.CommId]);
        Assert.Equal(18446683600640114688UL, ev.VaStart);
        Assert.Equal(20480UL, ev.Size);
        Assert.Equal(16384UL, ev.Align);
        Assert.Equal(0xffffc90000000000UL, ev.VStart);
        Assert.Equal(0xffffe8ffffffffffUL, ev.VEnd);
        Assert.False(ev.Failed);

        // real (comm with '/' and ':')
        (ev, r) = ParseOne("     kworker/1:0-1740    [001] .....  5860.314689: free_vmap_area_noflush: va_start=0xffffc900042f0000 nr_lazy=8270 nr_lazy_max=16384");
        Assert.Equal(EventKind.FreeVmapAreaNoflush, ev.Kind);
        Assert.Equal("kworker/1:0", r.Strings[ev.CommId]);
        Assert.Equal(1740, ev.Pid);
        Assert.Equal(1, ev.Cpu);
        Assert.Equal(0xffffc900042f0000UL, ev.VaStart);
        Assert.Equal(8270UL, ev.NrLazy);
        Assert.Equal(16384UL, ev.NrLazyMax);

        // built from vmalloc.h: "start=0x%lx end=0x%lx num_purged=%u"
        (ev, _) = ParseOne("     kworker/u8:2-77      [001] .....  5861.000001: purge_vmap_area_lazy: start=0xffffc90000000000 end=0xffffc90000400000 num_purged=12");
        Assert.Equal(EventKind.PurgeVmapAreaLazy, ev.Kind);
        Assert.Equal(0xffffc90000000000UL, ev.VStart);
        Assert.Equal(0xffffc90000400000UL, ev.VEnd);
        Assert.Equal(12u, ev.NrPurged);
    }

    [Fact]
    public void Events_kmem_emits_itself()
    {
        var (ev, _) = ParseOne("            bash-1       [000] d..1.    10.000000: mm_page_alloc_zone_locked: page=0000000011112222 pfn=0x1000 order=3 migratetype=0 percpu_refill=0");
        Assert.Equal(EventKind.MmPageAllocZoneLocked, ev.Kind);
        Assert.Equal(3, ev.Order);
        Assert.False(ev.PercpuRefill);

        (ev, _) = ParseOne("            bash-1       [000] d..1.    10.000001: mm_page_alloc_extfrag: page=0000000011112222 pfn=0x2000 alloc_order=0 fallback_order=9 pageblock_order=9 alloc_migratetype=0 fallback_migratetype=1 fragmenting=0 change_ownership=1");
        Assert.Equal(EventKind.MmPageAllocExtfrag, ev.Kind);
        Assert.Equal(0, ev.Order);
        Assert.Equal(9, ev.FallbackOrder);
        Assert.Equal(0, ev.MigrateType);
        Assert.Equal(1, ev.FallbackMigrateType);

        (ev, _) = ParseOne("         kswapd0-80      [001] .....    11.000000: mm_vmscan_kswapd_wake: nid=0 order=2");
        Assert.Equal((EventKind.MmVmscanKswapdWake, 0, 2), (ev.Kind, ev.Node, ev.Order));

        (ev, _) = ParseOne("         kswapd0-80      [001] .....    11.500000: mm_vmscan_kswapd_sleep: nid=0");
        Assert.Equal(EventKind.MmVmscanKswapdSleep, ev.Kind);

        (ev, _) = ParseOne("            bash-1       [000] .....    12.000000: mm_vmscan_direct_reclaim_begin: order=0 gfp_flags=GFP_KERNEL");
        Assert.Equal((EventKind.MmVmscanDirectReclaimBegin, Gfp.Kernel), (ev.Kind, ev.Gfp));

        (ev, _) = ParseOne("            bash-1       [000] .....    12.000100: mm_vmscan_direct_reclaim_end: nr_reclaimed=32");
        Assert.Equal((EventKind.MmVmscanDirectReclaimEnd, 32UL), (ev.Kind, ev.NrReclaimed));

        (ev, _) = ParseOne("            bash-1       [000] .....    13.000000: mark_victim: pid=4242 uid=0 comm=Web Content total-vm=1000kB anon-rss=800kB file-rss:0kB shmem-rss:0kB pgtables=40kB oom_score_adj=0");
        Assert.Equal((EventKind.MarkVictim, 4242), (ev.Kind, ev.VictimPid));
    }

    [Fact]
    public void Header_variants_comm_with_spaces_tgid_column_no_flags_column()
    {
        var (ev, r) = ParseOne("  Web Content-3110    [001] ..s1.  100.000002: kfree: call_site=x+0x1/0x2 ptr=0000000000000001");
        Assert.Equal("Web Content", r.Strings[ev.CommId]);
        Assert.Equal(3110, ev.Pid);

        (ev, r) = ParseOne("            bash-4904    (   4904) [000] .....  5860.242805: kfree: call_site=x+0x1/0x2 ptr=0000000000000001");
        Assert.Equal(("bash", 4904), (r.Strings[ev.CommId], ev.Pid));

        (ev, _) = ParseOne("            bash-4904  [000]  5860.242805: kfree: call_site=x+0x1/0x2 ptr=0000000000000001");
        Assert.Equal((5860_242805L, TraceContextFlags.None), (ev.TimestampUs, ev.Context));

        (ev, _) = ParseOne("          <idle>-0       [001] d.h2.  1.123456789: kfree: call_site=x+0x1/0x2 ptr=0000000000000001");
        Assert.Equal(1_123456L, ev.TimestampUs); // ns clock: digits beyond microseconds are dropped
    }

    [Fact]
    public void Every_line_length_and_alignment_parses_the_same()
    {
        // The parser finds token ends in a space bitmask built a vector at a time with an overlapping tail load,
        // and scans scalar past 512 bytes: shift the same event across every length and word alignment, with extra
        // spaces before the first field (the fast path's exit to the general loop) and after the last.
        const string Body = "bash-4904    [001] d.s1.  5860.242805: kmalloc: call_site=alloc_fdtable+0x55/0x140 ptr=00000000d7d61d6a bytes_req=56 bytes_alloc=64 gfp_flags=GFP_KERNEL_ACCOUNT node=-1 accounted=true";
        var (expected, _) = ParseOne(Body);
        foreach (int pad in Enumerable.Range(0, 140).Concat([400, 600]))
        {
            foreach (string line in new[] { new string(' ', pad) + Body, Body.Replace("kmalloc: ", "kmalloc: " + new string(' ', pad + 1)), Body + new string(' ', pad) })
            {
                var (ev, r) = ParseOne(line);
                Assert.Equal(expected with { CommId = 0, CallSiteId = 0, GfpTextId = 0 }, ev with { CommId = 0, CallSiteId = 0, GfpTextId = 0 });
                Assert.Equal(("bash", "alloc_fdtable+0x55/0x140"), (r.Strings[ev.CommId], r.Strings[ev.CallSiteId]));
            }
        }
    }

    [Theory]
    [InlineData(".....", TraceContextFlags.None, 0, 0, false)]
    [InlineData("..s1.", TraceContextFlags.Softirq, 1, 0, true)]
    [InlineData("d.h2.", TraceContextFlags.IrqsOff | TraceContextFlags.Hardirq, 2, 0, true)]
    [InlineData("dN.1.", TraceContextFlags.IrqsOff | TraceContextFlags.NeedResched | TraceContextFlags.PreemptResched, 1, 0, true)]
    [InlineData(".Ns..", TraceContextFlags.NeedResched | TraceContextFlags.PreemptResched | TraceContextFlags.Softirq, 0, 0, true)]
    [InlineData(".N...", TraceContextFlags.NeedResched | TraceContextFlags.PreemptResched, 0, 0, false)]
    [InlineData(".n...", TraceContextFlags.NeedResched, 0, 0, false)]
    [InlineData("...4.", TraceContextFlags.None, 4, 0, true)]
    [InlineData("...f1", TraceContextFlags.None, 15, 1, true)]
    [InlineData("....2", TraceContextFlags.None, 0, 2, false)]
    [InlineData("D.H..", TraceContextFlags.IrqsOff | TraceContextFlags.BhOff | TraceContextFlags.Hardirq | TraceContextFlags.Softirq, 0, 0, true)]
    [InlineData("b....", TraceContextFlags.BhOff, 0, 0, true)]
    [InlineData("dBz1.", TraceContextFlags.IrqsOff | TraceContextFlags.NeedResched | TraceContextFlags.NeedReschedLazy | TraceContextFlags.PreemptResched | TraceContextFlags.Nmi, 1, 0, true)]
    [InlineData(".L...", TraceContextFlags.NeedReschedLazy | TraceContextFlags.PreemptResched, 0, 0, false)]
    [InlineData("d.Z1", TraceContextFlags.IrqsOff | TraceContextFlags.Nmi | TraceContextFlags.Hardirq, 1, 0, true)] // 4-column (pre-5.13)
    public void Flags_column(string flags, TraceContextFlags expected, int preempt, int migrate, bool atomic)
    {
        var (ev, _) = ParseOne($"            bash-1       [000] {flags}  1.000000: kfree: call_site=x+0x1/0x2 ptr=0000000000000001");
        Assert.Equal(expected, ev.Context);
        Assert.Equal(preempt, ev.PreemptDepth);
        Assert.Equal(migrate, ev.MigrateDisableDepth);
        Assert.Equal(atomic, ev.IsAtomic);
        Assert.Equal((expected & TraceContextFlags.IrqsOff) != 0, ev.IrqsOff);
        Assert.Equal((expected & TraceContextFlags.Softirq) != 0, ev.InSoftirq);
        Assert.Equal((expected & TraceContextFlags.Hardirq) != 0, ev.InHardirq);
    }

    [Fact]
    public void Comments_blank_lines_unrelated_events_and_lost_notices_are_counted_not_returned()
    {
        string text = string.Join('\n',
            "# tracer: nop",
            "#",
            "#                                _-----=> irqs-off/BH-disabled",
            "",
            "   ",
            "            bash-1       [000] .....     1.000000: sched_switch: prev_comm=bash prev_pid=1 prev_prio=120 prev_state=S ==> next_comm=swapper/0 next_pid=0 next_prio=120",
            "CPU:1 [LOST 123 EVENTS]",
            "            bash-1       [000] .....     1.000001: kfree: call_site=x+0x1/0x2 ptr=0000000000000001\r",
            "");
        using var r = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(text)), "c.trace", TraceCompression.None);
        Assert.True(r.TryRead(out TraceEvent ev));
        Assert.Equal(EventKind.Kfree, ev.Kind);
        Assert.Equal(8, ev.Line);
        Assert.False(r.TryRead(out _));
        Assert.Equal((8L, 1L, 5L, 1L, 0L, 123L), (r.Lines, r.Events, r.Comments, r.Skipped, r.Malformed, r.LostEvents));
    }
}
