using System.Text;
using Kmem.Diagnostics;
using Kmem.PageAlloc;
using Kmem.Physical;
using Kmem.Replay;
using Kmem.Tracing;
using Kmem.Tracing.Emit;

namespace Kmem.Tests.Tracing;

using Gfp = global::Kmem.Gfp;

[CollectionDefinition("tracepoints", DisableParallelization = true)]
public sealed class TracepointCollection;

[Collection("tracepoints")]
public sealed unsafe class TracepointTests
{
    // Events of other tests' threads may land in the global buffer; keep ours by pid.
    private static string Capture(Action body, out int pid, RingMode mode = RingMode.Overwrite, int records = 1 << 16)
    {
        using var buffer = new TraceRingBuffer(2, records, mode);
        CurrentTask.Set("kmemtest", 4242);
        pid = CurrentTask.Pid;
        try
        {
            Tracepoints.Start(buffer);
            Tracepoints.EnableAll();
            body();
        }
        finally
        {
            Tracepoints.Stop();
            CurrentTask.Clear();
        }
        var w = new StringWriter();
        FtraceWriter.Write(w, buffer);
        return w.ToString();
    }

    private static List<TraceEvent> Read(string text, int pid, out FtraceReader reader)
    {
        reader = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(text)), "kmem.trace", TraceCompression.None);
        var list = new List<TraceEvent>();
        while (reader.TryRead(out TraceEvent ev))
            if (ev.Pid == pid) list.Add(ev);
        return list;
    }

    [Fact]
    public void Page_events_round_trip_through_the_reader_and_replay()
    {
        using var m = Machine.Boot();
        var pfns = new List<(long Pfn, int Order)>();
        string text = Capture(() =>
        {
            var pages = new List<(nint, int)>();
            for (int i = 0; i < 50; i++)
            {
                int order = i % 4;
                PageFrame* p = m.Pages.AllocPages(i % 2 == 0 ? Gfp.Kernel : Gfp.HighUserMovable | Gfp.Comp, order);
                pages.Add(((nint)p, order));
                pfns.Add((m.MemMap.PageToPfn(p), order));
            }
            for (int i = 0; i < pages.Count; i += 2) m.Pages.FreePages((PageFrame*)pages[i].Item1, pages[i].Item2);
        }, out int pid);

        Assert.StartsWith("# tracer: nop", text);
        List<TraceEvent> evs = Read(text, pid, out FtraceReader reader);
        using (reader)
        {
            var allocs = evs.Where(e => e.Kind == EventKind.MmPageAlloc).ToList();
            Assert.Equal(50, allocs.Count);
            Assert.Equal(25, evs.Count(e => e.Kind == EventKind.MmPageFree));
            for (int i = 0; i < 50; i++)
            {
                Assert.Equal((ulong)pfns[i].Pfn, allocs[i].Pfn);
                Assert.Equal(pfns[i].Order, allocs[i].Order);
                Assert.Equal(i % 2 == 0 ? Gfp.Kernel : Gfp.HighUserMovable | Gfp.Comp, allocs[i].Gfp);
                Assert.Equal("kmemtest", reader.Strings[allocs[i].CommId]);
            }
            Assert.Equal(0, reader.Malformed);

            // Replaying kmem's own trace reproduces the allocation sequence: 50 allocations, 25 frees, nothing unknown.
            using var m2 = Machine.Boot();
            var e = new ReplayEngine(m2, null, new ReplayOptions { Mode = ReplayMode.Pages });
            e.UseStrings(reader.Strings);
            foreach (TraceEvent ev in evs) e.Replay(ev);
            Assert.Equal(50, e.Replayed(EventKind.MmPageAlloc));
            Assert.Equal(25, e.Replayed(EventKind.MmPageFree));
            Assert.Equal(0, e.UnknownPageFrees);
            Assert.Equal(0, e.AllocatorErrors);
            Assert.Equal(25, e.LivePageBlocks);
            e.FreeAllLive();
        }
    }

    [Fact]
    public void Every_event_kind_formats_as_linux_and_parses_back()
    {
        string text = Capture(() =>
        {
            Tracepoints.Kmalloc("alloc_thing", 0x1000, 24, 32, Gfp.Kernel | Gfp.Zero, -1, false);
            Tracepoints.Kfree("free_thing", 0x1000);
            Tracepoints.KmemCacheAlloc("getname", 0x2000, "names_cache", 4096, 4096, Gfp.Kernel, -1, true);
            Tracepoints.KmemCacheFree("putname", 0x2000, "names_cache");
            Tracepoints.MmPageAlloc(0x3000, 0x18cc62, 1, 1, Gfp.HighUserMovable | Gfp.Comp);
            Tracepoints.MmPageFree(0x3000, 0x18cc62, 1);
            Tracepoints.MmPageFreeBatched(0x3000, 0x18cc62);
            Tracepoints.MmPageAllocZoneLocked(0x3000, 0x18cc62, 0, 0, true);
            Tracepoints.MmPageAllocExtfrag(0x3000, 0x18cc62, 0, 9, 0, 1);
            Tracepoints.AllocVmapArea(18446683600570097664, 20480, 4096, 0xffffc90000000000, 0xffffe8ffffffffff, false);
            Tracepoints.FreeVmapAreaNoflush(18446683600570097664, 4, 32768);
            Tracepoints.PurgeVmapAreaLazy(0xffffc90000000000, 0xffffc90000100000, 3);
            Tracepoints.KswapdWake(0, 2, 3);
            Tracepoints.KswapdSleep(0);
            Tracepoints.DirectReclaimBegin(2, Gfp.Kernel);
            Tracepoints.DirectReclaimEnd(32);
            Tracepoints.MarkVictim(77);
        }, out int pid);
        Assert.Contains("kmalloc: call_site=alloc_thing+0x0/0x0 ptr=0000000000001000 bytes_req=24 bytes_alloc=32 gfp_flags=GFP_KERNEL|__GFP_ZERO node=-1 accounted=false", text);
        Assert.Contains("mm_page_alloc: page=0000000000003000 pfn=0x18cc62 order=1 migratetype=1 gfp_flags=GFP_HIGHUSER_MOVABLE|__GFP_COMP", text);
        Assert.Matches(@"kmemtest-\d+ +\[00[01]\] \.\.\.\.\. +\d+\.\d{6}: kfree: ", text);
        List<TraceEvent> evs = Read(text, pid, out FtraceReader reader);
        using (reader)
        {
            Assert.Equal(0, reader.Malformed);
            Assert.Equal(Tracepoints.All.Count, evs.Count);
            Assert.Equal(Tracepoints.All.OrderBy(k => k), evs.Select(e => e.Kind).OrderBy(k => k));
            TraceEvent km = evs.Single(e => e.Kind == EventKind.KmemCacheAlloc);
            Assert.Equal(("names_cache", 4096L, true, "getname+0x0/0x0"), (reader.Strings[km.CacheNameId], km.BytesAlloc, km.Accounted, reader.Strings[km.CallSiteId]));
            TraceEvent va = evs.Single(e => e.Kind == EventKind.AllocVmapArea);
            Assert.Equal((18446683600570097664UL, 20480UL), (va.VaStart, va.Size));
            Assert.Equal(77, evs.Single(e => e.Kind == EventKind.MarkVictim).VictimPid);
        }
    }

    // The flags column shows kmem's real context (Context.PreemptCount / IrqsDisabled), and the reader decodes it back.
    [Fact]
    public void Flags_column_shows_the_emitting_context()
    {
        string text = Capture(() =>
        {
            Tracepoints.Kfree("task", 0x1);
            Kmem.Context.RunInSoftirq(() => Tracepoints.Kfree("softirq", 0x2));
            Kmem.Context.RunInHardirq(() => Tracepoints.Kfree("hardirq", 0x3));
            using (Kmem.Context.LocalIrqSave()) Tracepoints.Kfree("irqsoff", 0x4);
            using (Preempt.Disable())
            using (Preempt.Disable())
                Tracepoints.Kfree("preempt2", 0x5);
            using (Kmem.Context.LocalBhDisable()) Tracepoints.Kfree("bhoff", 0x6);
            Kmem.Context.RunInNmi(() => Tracepoints.Kfree("nmi", 0x7));
            Kmem.Context.RunInSoftirq(() => { using (Preempt.Disable()) Kmem.Context.RunInHardirq(() => Tracepoints.Kfree("nested", 0x8)); });
        }, out int pid);
        Assert.Matches(@"\] \.\.\.\.\. +\d+\.\d+: kfree: call_site=task\+", text);
        Assert.Matches(@"\] \.\.s\.\. +\d+\.\d+: kfree: call_site=softirq\+", text);
        Assert.Matches(@"\] d\.h\.\. +\d+\.\d+: kfree: call_site=hardirq\+", text);
        Assert.Matches(@"\] d\.\.\.\. +\d+\.\d+: kfree: call_site=irqsoff\+", text);
        Assert.Matches(@"\] \.\.\.2\. +\d+\.\d+: kfree: call_site=preempt2\+", text);
        Assert.Matches(@"\] b\.\.\.\. +\d+\.\d+: kfree: call_site=bhoff\+", text);
        Assert.Matches(@"\] d\.z\.\. +\d+\.\d+: kfree: call_site=nmi\+", text);
        Assert.Matches(@"\] d\.H1\. +\d+\.\d+: kfree: call_site=nested\+", text);
        List<TraceEvent> evs = Read(text, pid, out FtraceReader reader);
        using (reader)
        {
            Assert.Equal(0, reader.Malformed);
            TraceEvent By(string site) => evs.Single(e => reader.Strings[e.CallSiteId] == site + "+0x0/0x0");
            Assert.False(By("task").IsAtomic);
            Assert.True(By("softirq").InSoftirq && !By("softirq").IrqsOff);
            Assert.True(By("hardirq").InHardirq && By("hardirq").IrqsOff);
            Assert.True(By("irqsoff").IrqsOff && By("irqsoff").PreemptDepth == 0);
            Assert.Equal(2, By("preempt2").PreemptDepth);
            Assert.True(By("bhoff").BhOff && !By("bhoff").InSoftirq);
            Assert.True(By("nmi").InNmi);
            Assert.True(By("nested").InHardirq && By("nested").InSoftirq && By("nested").PreemptDepth == 1);
        }
    }

    // kmem's own trace round-trips: a workload traced by a TraceSession (kmalloc/kfree, kmem_cache, pages, vmalloc),
    // written as .zst, read back and replayed through a fresh machine, reproduces the same allocations by type.
    [Fact]
    public void Trace_session_round_trips_a_workload_through_replay()
    {
        string path = Path.Combine(Path.GetTempPath(), $"kmem-roundtrip-{Environment.ProcessId}-{Guid.NewGuid():N}.trace.zst");
        using var m = Machine.Boot();
        const int Pid = 4343;
        int kmallocs = 0, kfrees = 0, cacheAllocs = 0, cacheFrees = 0, pageAllocs = 0, pageFrees = 0, vmallocs = 0, vfrees = 0;
        using (var session = TraceSession.Start(m, 1 << 16))
        {
            CurrentTask.Set("kmemtest", Pid);
            try
            {
                var objs = new List<nint>();
                for (int i = 0; i < 100; i++) { objs.Add((nint)m.Slab.Kmalloc((nuint)(8 + i * 37), Gfp.Kernel)); kmallocs++; }
                objs.Add((nint)m.Slab.Kmalloc(20000, Gfp.Kernel)); kmallocs++; // kmalloc_large
                for (int i = 0; i < objs.Count; i += 2) { m.Slab.Kfree((void*)objs[i]); kfrees++; }
                m.Slab.Kfree(null); kfrees++;
                Kmem.Slab.KmemCache c = m.Slab.CreateCache("roundtrip_cache", 200)!;
                var cobjs = new List<nint>();
                for (int i = 0; i < 50; i++) { cobjs.Add((nint)c.Alloc(Gfp.Kernel)); cacheAllocs++; }
                for (int i = 0; i < 30; i++) { c.Free((void*)cobjs[i]); cacheFrees++; }
                var pages = new List<nint>();
                for (int i = 0; i < 20; i++) { pages.Add((nint)m.Pages.AllocPages(Gfp.HighUserMovable, i % 3)); pageAllocs++; }
                for (int i = 0; i < 10; i++) { m.Pages.FreePages((PageFrame*)pages[i], i % 3); pageFrees++; }
                var vms = new List<nint>();
                for (int i = 0; i < 5; i++) { vms.Add((nint)m.Vmalloc.Vmalloc((nuint)(4096 * (i + 1)))); vmallocs++; }
                for (int i = 0; i < 3; i++) { m.Vmalloc.Vfree((void*)vms[i]); vfrees++; }
            }
            finally
            {
                CurrentTask.Clear();
            }
            Assert.Equal(0, session.Lost);
            Assert.True(session.WriteTo(path) > 0);
        }
        try
        {
            var evs = new List<TraceEvent>();
            using var reader = new FtraceReader(path);
            Assert.Equal(TraceCompression.Zstd, reader.Compression);
            while (reader.TryRead(out TraceEvent ev))
                if (ev.Pid == Pid) evs.Add(ev);
            Assert.Equal(0, reader.Malformed);
            // call_site is the calling method's name ([CallerMemberName] on the slab entry points), as Linux prints a function.
            bool Ours(TraceEvent e) => reader.Strings[e.CallSiteId].StartsWith(nameof(Trace_session_round_trips_a_workload_through_replay) + "+", StringComparison.Ordinal);
            int N(EventKind k, bool ours = false) => evs.Count(e => e.Kind == k && (!ours || Ours(e)));
            // The workload's own calls, by call site (kmem's internals, e.g. vmalloc's metadata, add their own events).
            Assert.Equal(kmallocs, N(EventKind.Kmalloc, ours: true));
            Assert.Equal(kfrees, N(EventKind.Kfree, ours: true));
            Assert.Equal(cacheAllocs, N(EventKind.KmemCacheAlloc, ours: true));
            Assert.Equal(cacheFrees, N(EventKind.KmemCacheFree, ours: true));
            Assert.Equal(vmallocs, N(EventKind.AllocVmapArea));
            Assert.Equal(vfrees, N(EventKind.FreeVmapAreaNoflush));
            Assert.True(N(EventKind.MmPageAlloc) >= pageAllocs && N(EventKind.MmPageFree) >= pageFrees);
            TraceEvent big = evs.Single(e => e.Kind == EventKind.Kmalloc && e.BytesReq == 20000);
            Assert.Equal(4096L << 3, big.BytesAlloc);
            Assert.Equal("roundtrip_cache", reader.Strings[evs.First(e => e.Kind == EventKind.KmemCacheAlloc && Ours(e)).CacheNameId]);

            // Replay reproduces every allocation and free of the trace, by type.
            using var m2 = Machine.Boot();
            using var e = new ReplayEngine(m2, new MachineObjects(m2), new ReplayOptions { Mode = ReplayMode.All });
            e.UseStrings(reader.Strings);
            foreach (TraceEvent ev in evs) e.Replay(ev);
            Assert.Equal(0, e.AllocatorErrors);
            Assert.Equal(0, e.KmallocSizeClassMismatches);
            Assert.Equal(0, e.CacheSizeMismatches);
            Assert.Equal(0, e.UnknownFrees);
            Assert.Equal(0, e.UnknownVmapFrees);
            Assert.Equal(1, e.NullFrees);
            foreach (EventKind k in new[] { EventKind.Kmalloc, EventKind.Kfree, EventKind.KmemCacheAlloc, EventKind.KmemCacheFree, EventKind.MmPageAlloc, EventKind.AllocVmapArea, EventKind.FreeVmapAreaNoflush })
                Assert.Equal((k, (long)N(k)), (k, e.Replayed(k)));
            e.FreeAllLive();
            Assert.Equal(0, e.AllocatorErrors);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Disabled_events_record_nothing()
    {
        using var m = Machine.Boot();
        using var buffer = new TraceRingBuffer(2, 64);
        Tracepoints.Start(buffer);
        Tracepoints.DisableAll();
        PageFrame* p = m.Pages.AllocPages(Gfp.Kernel, 0);
        m.Pages.FreePages(p, 0);
        Tracepoints.Enable(EventKind.MmPageFree);
        Assert.True(Tracepoints.IsEnabled(EventKind.MmPageFree));
        Assert.False(Tracepoints.IsEnabled(EventKind.MmPageAlloc));
        p = m.Pages.AllocPages(Gfp.Kernel, 0);
        m.Pages.FreePages(p, 0);
        Tracepoints.Stop();
        Assert.False(Tracepoints.IsEnabled(EventKind.MmPageFree));
        Assert.All(buffer.Snapshot(), r => Assert.Equal(EventKind.MmPageFree, r.Kind));
    }

    [Theory]
    [InlineData(RingMode.Overwrite)]
    [InlineData(RingMode.Stop)]
    public void Full_buffer_counts_lost_events_and_keeps_newest_or_oldest(RingMode mode)
    {
        using var buffer = new TraceRingBuffer(1, 8, mode);
        for (int i = 0; i < 20; i++)
            buffer.Write(new TraceRecord { Kind = EventKind.Kfree, A = (ulong)i, Ticks = i });
        Assert.Equal(12, buffer.TotalLost);
        var kept = buffer.Snapshot().Select(r => (int)r.A).ToList();
        Assert.Equal(mode == RingMode.Overwrite ? Enumerable.Range(12, 8) : Enumerable.Range(0, 8), kept);
        var w = new StringWriter();
        FtraceWriter.Write(w, buffer);
        using var reader = new FtraceReader(new MemoryStream(Encoding.ASCII.GetBytes(w.ToString())), "t", TraceCompression.None);
        while (reader.TryRead(out _)) { }
        Assert.Equal(12, reader.LostEvents);
        Assert.Equal(8, reader.Events);
    }
}
