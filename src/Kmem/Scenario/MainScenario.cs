using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Kmem.Diagnostics;
using Kmem.Mm;
using Kmem.Proc;
using Kmem.Slab;
using Process = Kmem.Mm.Process;

namespace Kmem.Scenario;

/// <summary>Choices for <see cref="MainScenario"/>.</summary>
public sealed record ScenarioOptions
{
    public int Seed { get; init; } = 1;
    /// <summary>Multiplies every phase's amount of work (1 = the default run of a few seconds).</summary>
    public double Length { get; init; } = 1.0;
}

/// <summary>Hears about the scenario's phases (the CLI draws progress bars).</summary>
public interface IScenarioObserver
{
    void PhaseStarted(string name, long totalSteps);
    void PhaseProgress(long doneSteps);
    void PhaseFinished(string name, string summary);
}

/// <summary>
/// The main job of <c>kmem run</c>: one machine living through a kernel's day, in phases that each show one thing the
/// kernel does differently from user space.
/// </summary>
/// <remarks>
/// Phases:
/// <list type="number">
/// <item>boot: the caches a kernel creates early (task_struct, mm_struct, vm_area_struct, ...), swap, and the
/// kernel-vs-user comparison of the same 64 MiB.</item>
/// <item>fork/exec: two CPUs create and reap processes. Each costs kernel objects from slab caches (GFP_KERNEL_ACCOUNT),
/// a vmalloc'd kernel stack, kmalloc'd file tables, and a user address space that is only backed where touched.</item>
/// <item>network receive: bursts in softirq context allocate socket buffers with GFP_ATOMIC (they cannot sleep); a
/// process-context consumer on the other CPU frees them.</item>
/// <item>file-system caching: the page cache fills with file pages (some dirty) and the dentry cache grows.</item>
/// <item>memory pressure: a memory hog faults in more than the machine has. kswapd wakes, direct reclaim drops clean
/// page cache, writes back dirty pages, swaps anonymous memory and shrinks the dentry cache; GFP_ATOMIC bursts start to
/// fail once only the reserves are left; a GFP_KERNEL allocation blocks until reclaim or the OOM killer frees memory.
/// The OOM killer picks the hog.</item>
/// <item>module load: vmalloc'd module images, then unloading them (lazy purge).</item>
/// <item>teardown: everything is freed and the machine is checked for leaks.</item>
/// </list>
/// The scenario is deterministic in what it asks for (seeded); what the allocator answers depends on timing between
/// threads, as on a real machine.
/// </remarks>
public sealed unsafe class MainScenario : IDisposable
{
    private readonly Machine _m;
    private readonly ScenarioOptions _o;
    private readonly IScenarioObserver? _obs;
    private readonly GfpLedger _ledger = new();
    private readonly List<KmemCache> _caches = new();
    private KmemCache _task = null!, _pid = null!, _files = null!, _signal = null!, _sighand = null!, _mmStruct = null!,
        _vma = null!, _anonVma = null!, _avc = null!, _skb = null!;
    private DentryCache? _dentry;
    private readonly MemoryPressure _pressure;
    private readonly List<Task> _liveTasks = new();
    private readonly List<nint> _modules = new();
    private readonly KSpinLock _pidmapLock = new("pidmap_lock");
    private long _oomKillsBefore;
    private GfpLedger.Entry? _idrAtomic;

    /// <summary>What a finished run found; also the JSON summary.</summary>
    public sealed class Result
    {
        public required string Machine { get; init; }
        public required IReadOnlyList<GfpLedger.Entry> Gfp { get; init; }
        public required ReclaimReport Reclaim { get; init; }
        public required long OomKills { get; init; }
        public required long LeakedPages { get; init; }
        public required long LeakedObjects { get; init; }
        public required string? Inconsistency { get; init; }
        public required KernelVsUser KernelVsUser { get; init; }
        public required IReadOnlyList<(string Phase, string Summary, double Seconds)> Phases { get; init; }
        public required string BuddyinfoAtBoot { get; init; }
        public required string BuddyinfoUnderPressure { get; init; }
        public required string BuddyinfoAtEnd { get; init; }
        public required string SlabinfoExcerpt { get; init; }
        public required string VmallocinfoExcerpt { get; init; }
        public required IReadOnlyList<string> OomLog { get; init; }
        /// <summary>What the x86_32 HIGHMEM phase printed (empty on x86_64).</summary>
        public string Highmem { get; init; } = "";
        public bool Clean => LeakedPages == 0 && LeakedObjects == 0 && Inconsistency == null;
    }

    private sealed class Task
    {
        public readonly List<(KmemCache Cache, nint Obj)> Objects = new();
        public readonly List<nint> Kmalloced = new();
        public nint Stack;
        public Process? User;
    }

    public MainScenario(Machine machine, ScenarioOptions? options = null, IScenarioObserver? observer = null)
    {
        _m = machine;
        _o = options ?? new ScenarioOptions();
        _obs = observer;
        _pressure = new MemoryPressure(machine);
    }

    private long Scaled(long n) => Math.Max(1, (long)(n * _o.Length));

    public Result Run()
    {
        var phases = new List<(string, string, double)>();
        void Phase(string name, long steps, Func<Action<long>, string> body)
        {
            _obs?.PhaseStarted(name, steps);
            var sw = Stopwatch.StartNew();
            string summary = body(done => _obs?.PhaseProgress(done));
            phases.Add((name, summary, sw.Elapsed.TotalSeconds));
            _obs?.PhaseFinished(name, summary);
        }

        string atBoot = ProcViews.Buddyinfo(_m);
        _oomKillsBefore = _m.Stat[VmItem.OomKill];
        var reclaimBefore = ReclaimReport.Of(_m);
        KernelVsUser kvu = default;
        string underPressure = "", slabinfo = "", vmallocinfo = "";

        Phase("boot", 1, _ =>
        {
            CreateCaches();
            _pressure.SwapOn(Math.Min(64L << 20, _m.TotalRamPages * ArchProfile.PageSize / 8));
            kvu = MemoryPressure.CompareKernelVsUser(_m, Math.Min(64L << 20, _m.TotalRamPages * ArchProfile.PageSize / 4));
            return $"{_caches.Count} caches, swap {_m.SwapTotalPages * 4 / 1024} MiB; 64 MiB for a process: {kvu.UserRssAfterMmapKb} kB resident after mmap; for the kernel: {kvu.KernelAllocatedKb} kB at once";
        });

        long pageOps = Scaled(100_000);
        Phase("page allocator", pageOps * Math.Min(2, _m.CpuCount), progress =>
        {
            var work = new PageWorkload { OperationsPerThread = pageOps, Seed = _o.Seed };
            foreach (var (name, gfp, _) in PageWorkload.Types) _ledger.For(name, gfp | Gfp.NoWarn);
            var runner = new Thread(() => work.Run(_m, Math.Min(2, _m.CpuCount))) { IsBackground = true };
            runner.Start();
            while (!runner.Join(50)) progress(work.Done);
            long failures = 0;
            foreach (var (name, gfp, _) in PageWorkload.Types)
            {
                var t = work.Tally[name];
                GfpLedger.CountProcess(_ledger.For(name, gfp | Gfp.NoWarn), t.Allocations, t.Failures);
                failures += t.Failures;
            }
            return $"{work.Total(Math.Min(2, _m.CpuCount))} alloc/free of orders 0..10 from {Math.Min(2, _m.CpuCount)} CPUs, peak {work.PeakLivePages * 4 / 1024} MiB live, {failures} failures, all returned";
        });

        long slabOps = Scaled(100_000);
        Phase("slab caches and kmalloc", slabOps * Math.Min(2, _m.CpuCount), progress =>
        {
            var work = new SlabWorkload { OperationsPerThread = slabOps, Seed = _o.Seed };
            var runner = new Thread(() => work.Run(_m, Math.Min(2, _m.CpuCount))) { IsBackground = true };
            runner.Start();
            while (!runner.Join(50)) progress(work.Done);
            string s = $"dentry_like/inode_like constructors ran {work.DentryCtorCalls + work.InodeCtorCalls} times for {work.Total(Math.Min(2, _m.CpuCount))} operations; {work.Errors} pattern errors";
            _m.Slab.DestroyCache(work.Dentry);
            _m.Slab.DestroyCache(work.Inode);
            _m.Slab.ShrinkAll();
            return s;
        });

        long forks = Scaled(300);
        Phase("fork/exec", forks, progress => ForkExec(forks, progress));

        long bursts = Scaled(200);
        Phase("network receive (softirq)", bursts, progress => NetworkReceive(bursts, progress));

        long filePages = _m.TotalRamPages / 3;
        Phase("file-system caching", filePages, progress => FileSystem(filePages, progress));

        Phase("memory pressure", 100, progress =>
        {
            string s = Pressure(progress);
            underPressure = ProcViews.Buddyinfo(_m);
            slabinfo = SlabinfoExcerpt();
            return s;
        });

        Phase("module load (vmalloc)", VmallocScenario.Modules.Length, progress =>
        {
            string s = ModuleLoad(progress);
            vmallocinfo = VmallocExcerpt(_m.Vmalloc.VmallocInfo());
            return s;
        });

        string highmem = "";
        if (_m.Profile.Arch == Arch.X86_32)
            Phase("HIGHMEM and the vmalloc window", 1, _ =>
            {
                var sw = new StringWriter();
                VmallocScenario.Highmem32(_m, sw);
                highmem = sw.ToString().TrimStart('\n');
                return "kmap, kmap_local and the 1 GiB window (see below)";
            });

        long leakedObjects = 0;
        string? inconsistency = null;
        Phase("teardown", 1, _ =>
        {
            leakedObjects = Teardown(out inconsistency);
            return $"{_m.FreePages} of {_m.TotalRamPages} pages free";
        });

        _ledger.CollectBlocked(_m);
        long leakedPages = _m.TotalRamPages - _m.FreePages;
        var oomLog = _m.Log.Lines.Where(l => l.StartsWith("Out of memory", StringComparison.Ordinal) || l.Contains("invoked oom-killer", StringComparison.Ordinal)).ToList();
        return new Result
        {
            Machine = $"{_m.Profile.Name}, {_m.TotalRamPages * 4 / 1024} MiB managed, {_m.CpuCount} CPUs",
            Gfp = _ledger.Entries,
            Reclaim = ReclaimReport.Of(_m).Since(reclaimBefore),
            OomKills = _m.Stat[VmItem.OomKill] - _oomKillsBefore,
            LeakedPages = leakedPages,
            LeakedObjects = leakedObjects,
            Inconsistency = inconsistency,
            KernelVsUser = kvu,
            Phases = phases,
            BuddyinfoAtBoot = atBoot,
            BuddyinfoUnderPressure = underPressure,
            BuddyinfoAtEnd = ProcViews.Buddyinfo(_m),
            SlabinfoExcerpt = slabinfo,
            VmallocinfoExcerpt = vmallocinfo,
            Highmem = highmem,
            OomLog = oomLog,
        };
    }

    // ---------------------------------------------------------------------------------------------------------
    // Phases
    // ---------------------------------------------------------------------------------------------------------

    private KmemCache Cache(string name, int size, SlabFlags flags)
    {
        var c = _m.Slab.CreateCache(name, size, 0, flags | SlabFlags.Panic)!;
        _caches.Add(c);
        return c;
    }

    private void CreateCaches()
    {
        // Object sizes are the real kernel's (bytes_req in the shared traces); SLAB_ACCOUNT as in kernel/fork.c.
        const SlabFlags Acct = SlabFlags.Account;
        _task = Cache("task_struct", 5824, Acct | SlabFlags.HwcacheAlign);
        _pid = Cache("pid", 184, Acct | SlabFlags.HwcacheAlign);
        _files = Cache("files_cache", 704, Acct | SlabFlags.HwcacheAlign);
        _signal = Cache("signal_cache", 1152, Acct | SlabFlags.HwcacheAlign);
        _sighand = Cache("sighand_cache", 2080, Acct | SlabFlags.HwcacheAlign | SlabFlags.TypesafeByRcu);
        _mmStruct = Cache("mm_struct", 1568, Acct | SlabFlags.HwcacheAlign);
        _vma = Cache("vm_area_struct", 192, Acct | SlabFlags.HwcacheAlign);
        _anonVma = Cache("anon_vma", 96, Acct);
        _avc = Cache("anon_vma_chain", 64, Acct);
        _skb = Cache("skbuff_head_cache", 232, SlabFlags.HwcacheAlign);
        _dentry = new DentryCache(_m, "dentry", 192);
    }

    private string ForkExec(long forks, Action<long> progress)
    {
        var kacct = _ledger.For("GFP_KERNEL_ACCOUNT", Gfp.KernelAccount);
        _idrAtomic = _ledger.For("GFP_ATOMIC", Gfp.Atomic | Gfp.NoWarn);
        var stackGfp = _ledger.For("GFP_KERNEL_ACCOUNT", Gfp.KernelAccount | Gfp.Zero);
        var user = _ledger.For("GFP_HIGHUSER_MOVABLE", Gfp.HighUserMovable);
        long faultsBefore = _m.Stat[VmItem.PgFault];
        long done = 0;
        int threads = Math.Min(2, _m.CpuCount);
        long perThread = forks / threads;
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() =>
            {
                using var pin = Cpu.Pin(id);
                CurrentTask.Set(id == 0 ? "bash" : "sh", 1000 + id);
                var rng = new Random(_o.Seed * 31 + id);
                var recent = new List<Task>();
                for (long i = 0; i < perThread; i++)
                {
                    var task = Fork(rng, kacct, stackGfp);
                    recent.Add(task);
                    // Most children exit soon after exec; about one in ten lives on until teardown.
                    while (recent.Count > 4)
                    {
                        var victim = recent[0];
                        recent.RemoveAt(0);
                        if (rng.Next(10) == 0) { lock (_liveTasks) _liveTasks.Add(victim); }
                        else Exit(victim);
                    }
                    progress(Interlocked.Increment(ref done));
                }
                foreach (var t2 in recent) Exit(t2);
                CurrentTask.Clear();
            }) { Name = $"fork-{id}", IsBackground = true };
            workers[t].Start();
        }
        foreach (var w in workers) w.Join();
        long faults = _m.Stat[VmItem.PgFault] - faultsBefore;
        GfpLedger.CountProcess(user, faults);
        return $"{perThread * threads} processes created, {_liveTasks.Count} still running; {faults} user pages faulted in on first touch";
    }

    private Task Fork(Random rng, GfpLedger.Entry kacct, GfpLedger.Entry stackGfp)
    {
        var t = new Task();
        void Obj(KmemCache c)
        {
            void* o = c.Alloc(Gfp.KernelAccount);
            GfpLedger.Count(kacct, o != null);
            if (o != null) t.Objects.Add((c, (nint)o));
        }
        void Kmalloc(nuint size)
        {
            void* o = _m.Slab.Kmalloc(size, Gfp.KernelAccount);
            GfpLedger.Count(kacct, o != null);
            if (o != null) t.Kmalloced.Add((nint)o);
        }
        // copy_process: task_struct, its kernel stack (vmalloc'd, THREAD_SIZE = 16 KiB on x86_64), pid, files, signals.
        Obj(_task);
        byte* stack = _m.Vmalloc.VmallocGfp((nuint)(_m.Profile.Arch == Arch.X86_64 ? 16384 : 8192), Gfp.KernelAccount | Gfp.Zero, "kernel_clone");
        GfpLedger.Count(stackGfp, stack != null);
        t.Stack = (nint)stack;
        Obj(_pid);
        // alloc_pid: the pid number is allocated under pidmap_lock with irqs off, so the idr node it may need is
        // GFP_ATOMIC (Linux preloads it; here the allocation happens under the lock to show the context).
        using (_pidmapLock.LockIrqSave())
        {
            void* idr = _m.Slab.Kmalloc(72, Gfp.Atomic | Gfp.NoWarn);
            GfpLedger.Count(_idrAtomic!, idr != null);
            if (idr != null) t.Kmalloced.Add((nint)idr);
        }
        Obj(_files);
        Kmalloc(56);   // alloc_fdtable: struct fdtable
        Kmalloc(2048); // alloc_fdtable: the fd array
        Kmalloc(72);   // alloc_fdtable: the bitmaps
        Obj(_signal);
        Obj(_sighand);
        // exec: a new mm with its VMAs and anon_vma chains.
        Obj(_mmStruct);
        int vmas = 6 + rng.Next(8);
        for (int i = 0; i < vmas; i++) Obj(_vma);
        for (int i = 0; i < vmas / 3; i++) { Obj(_anonVma); Obj(_avc); Obj(_avc); }
        // The user side: an address space that is only backed where the program touches it.
        try
        {
            var p = _m.Reclaim.CreateProcess("true");
            t.User = p;
            long size = (1 + rng.Next(4)) << 20;
            ulong a = p.Mmap(size);
            int touch = 8 + rng.Next(24);
            for (int i = 0; i < touch; i++) p.Touch(a + (ulong)(rng.NextInt64(size / ArchProfile.PageSize) * ArchProfile.PageSize));
        }
        catch (MmException)
        {
            // ENOMEM on a small machine: the child fails to exec, as it would.
        }
        return t;
    }

    private void Exit(Task t)
    {
        if (t.User is { HasExited: false } u) u.Exit();
        for (int i = t.Objects.Count - 1; i >= 0; i--) t.Objects[i].Cache.Free((void*)t.Objects[i].Obj);
        foreach (var p in t.Kmalloced) _m.Slab.Kfree((void*)p);
        if (t.Stack != 0) _m.Vmalloc.Vfree((void*)t.Stack);
        t.Objects.Clear();
        t.Kmalloced.Clear();
        t.Stack = 0;
    }

    private string NetworkReceive(long bursts, Action<long> progress)
    {
        var atomic = _ledger.For("GFP_ATOMIC", Gfp.Atomic);
        var frag = _ledger.For("GFP_ATOMIC", Gfp.Atomic | Gfp.Comp | Gfp.NoWarn | Gfp.NoRetry);
        var queue = new System.Collections.Concurrent.BlockingCollection<(nint Head, nint Data)>(boundedCapacity: 4096);
        long received = 0, dropped = 0;
        var consumer = new Thread(() =>
        {
            using var pin = Cpu.Pin(Math.Min(1, _m.CpuCount - 1));
            CurrentTask.Set("sshd", 2001);
            foreach (var (head, data) in queue.GetConsumingEnumerable())
            {
                _m.Slab.Kfree((void*)data);
                _skb.Free((void*)head);
            }
        }) { Name = "recv-consumer", IsBackground = true };
        consumer.Start();
        var rng = new Random(_o.Seed * 17);
        using (Cpu.Pin(0))
        {
            for (long b = 0; b < bursts; b++)
            {
                int packets = 16 + rng.Next(48);
                Context.RunInSoftirq(() =>
                {
                    // net_rx_action: each packet gets an sk_buff head and a data buffer; neither may sleep.
                    for (int i = 0; i < packets; i++)
                    {
                        void* head = _skb.Alloc(Gfp.Atomic);
                        GfpLedger.Count(atomic, head != null);
                        if (head == null) { dropped++; continue; }
                        nuint len = (nuint)(rng.Next(4) == 0 ? 4096 : 2048);
                        void* data = _m.Slab.Kmalloc(len, Gfp.Atomic | Gfp.NoWarn);
                        GfpLedger.Count(atomic, data != null);
                        if (data == null) { _skb.Free(head); dropped++; continue; }
                        received++;
                        queue.Add(((nint)head, (nint)data));
                    }
                    // The page_frag cache refills with an order-3 block when it can, order 0 when it cannot.
                    PageFrame* pf = _m.Pages.AllocPages(Gfp.Atomic | Gfp.Comp | Gfp.NoWarn | Gfp.NoRetry, 3);
                    GfpLedger.Count(frag, pf != null);
                    if (pf != null) _m.Pages.FreePages(pf, 3);
                });
                progress(b + 1);
            }
        }
        queue.CompleteAdding();
        consumer.Join();
        return $"{received} packets received in softirq with GFP_ATOMIC, {dropped} dropped";
    }

    private string FileSystem(long pages, Action<long> progress)
    {
        var kernel = _ledger.For("GFP_KERNEL", Gfp.Kernel);
        var files = new List<CachedFile>();
        int nfiles = 8;
        long per = pages / nfiles;
        for (int i = 0; i < nfiles; i++)
        {
            files.Add(_pressure.FillPageCache($"file{i}", per, dirtyFraction: i % 3 == 0 ? 0.3 : 0));
            progress((i + 1) * per);
        }
        long dentries = Scaled(20000);
        long made = _dentry!.Populate(dentries);
        GfpLedger.CountProcess(kernel, dentries, dentries - made);
        long cached = files.Sum(f => f.CachedPages);
        return $"{cached * 4 / 1024} MiB in the page cache ({_m.Stat[VmItem.NrDirty] * 4} kB dirty), {made} dentries";
    }

    private string Pressure(Action<long> progress)
    {
        // Register the exact masks used, so that blocked time (kept per mask by reclaim) adds up per type.
        var kernel = _ledger.For("GFP_KERNEL", Gfp.Kernel | Gfp.NoWarn);
        var noio = _ledger.For("GFP_NOIO", Gfp.NoIo | Gfp.NoWarn);
        var nofs = _ledger.For("GFP_NOFS", Gfp.NoFs | Gfp.NoWarn);
        var atomic = _ledger.For("GFP_ATOMIC", Gfp.Atomic | Gfp.NoWarn);
        var nowait = _ledger.For("GFP_NOWAIT", Gfp.NoWait);
        var user = _ledger.For("GFP_HIGHUSER_MOVABLE", Gfp.HighUserMovable | Gfp.Zero);
        _ledger.For("GFP_HIGHUSER_MOVABLE", Gfp.HighUserMovable);
        var reclaim = _m.Reclaim;
        var stallTimeout = reclaim.StallTimeout;
        reclaim.StallTimeout = TimeSpan.FromSeconds(10);

        // A memory hog: maps RAM + swap and touches it all. Overcommit lets it map; the OOM killer ends it.
        long hogBytes = (_m.TotalRamPages + _m.SwapTotalPages) * ArchProfile.PageSize;
        var hog = _m.Reclaim.CreateProcess("memhog");
        ulong hogAddr = 0;
        long faultsBefore = _m.Stat[VmItem.PgFault];
        long hogFaults = 0, hogPages = hogBytes / ArchProfile.PageSize;
        string hogEnd = "still running";
        var hogThread = new Thread(() =>
        {
            using var pin = Cpu.Pin(1 % _m.CpuCount);
            CurrentTask.Set("memhog", hog.Pid);
            try
            {
                hogAddr = hog.Mmap(hogBytes, "[heap]");
                for (long i = 0; i < hogPages; i++)
                {
                    hog.Touch(hogAddr + (ulong)(i * ArchProfile.PageSize));
                    Interlocked.Increment(ref hogFaults);
                    if ((i & 255) == 0) progress(Math.Min(99, i * 100 / hogPages));
                }
                hogEnd = "touched everything";
            }
            catch (MmException e)
            {
                hogEnd = e.Error == "SIGKILL" ? "killed by the OOM killer" : e.Message;
            }
            CurrentTask.Clear();
        }) { Name = "memhog", IsBackground = true };
        hogThread.Start();

        // Meanwhile on CPU 0: the kernel keeps working. Network bursts in softirq (GFP_ATOMIC), a block-layer path
        // (GFP_NOIO), a filesystem path (GFP_NOFS) and ordinary GFP_KERNEL allocations that may have to wait.
        var held = new List<(nint Page, int Order)>();
        long atomicFailAt = -1, stormPages = -1, stormFreeAtFailure = -1, kernelAfterStorm = 0;
        double kernelAfterStormMs = 0;
        // The hog's faults can only use the zones its gfp allows (lowmem only on x86_32, see Process.FaultGfp).
        long usable = (hog.FaultGfp & Gfp.HighMem) != 0 ? _m.TotalRamPages
            : _m.Pages.Zones.Where(z => !z.IsHighMem).Sum(z => z.ManagedPages);
        long stormTrigger = usable * 8 / 10;
        // A packet storm at the worst moment, on its own thread so that nothing else's waiting delays it.
        var stormThread = new Thread(() =>
        {
            using var pin = Cpu.Pin(0);
            CurrentTask.Set("ksoftirqd/0", 15);
            while (hogThread.IsAlive && Interlocked.Read(ref hogFaults) < stormTrigger) Thread.Sleep(1);
            if (!hogThread.IsAlive) return;
            int round = -1;
            // A packet storm at the worst moment: softirq keeps taking GFP_ATOMIC pages until one fails. The
            // atomic reserve lets it go below the min watermark (to 3/8 of it); then it fails, it cannot wait.
            var storm = new List<nint>();
            Context.RunInSoftirq(() =>
            {
                long cap = _m.TotalRamPages / 4;
                while (storm.Count < cap)
                {
                    PageFrame* p = _m.Pages.AllocPages(Gfp.Atomic | Gfp.NoWarn, 0);
                    GfpLedger.Count(atomic, p != null);
                    if (p == null)
                    {
                        stormFreeAtFailure = _m.FreePages;
                        if (atomicFailAt < 0) atomicFailAt = round;
                        break;
                    }
                    storm.Add((nint)p);
                }
            });
            stormPages = storm.Count;
            // The same moment in process context: GFP_KERNEL may sleep, so it reclaims and gets its pages.
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < 64; i++)
            {
                PageFrame* p = _m.Pages.AllocPages(Gfp.Kernel | Gfp.NoWarn, 0);
                GfpLedger.Count(kernel, p != null);
                if (p != null) { kernelAfterStorm++; lock (held) held.Add(((nint)p, 0)); }
            }
            kernelAfterStormMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            foreach (var p in storm) _m.Pages.FreePages((PageFrame*)p, 0);
            reclaim.NotifyFreed();
            CurrentTask.Clear();
        }) { Name = "storm", IsBackground = true };
        stormThread.Start();

        using (Cpu.Pin(0))
        {
            int round = 0;
            while (hogThread.IsAlive && round < 20000)
            {
                round++;
                Context.RunInSoftirq(() =>
                {
                    for (int i = 0; i < 8; i++)
                    {
                        PageFrame* p = _m.Pages.AllocPages(Gfp.Atomic | Gfp.NoWarn, 0);
                        GfpLedger.Count(atomic, p != null);
                        if (p == null) { if (atomicFailAt < 0) atomicFailAt = round; }
                        else lock (held) held.Add(((nint)p, 0));
                    }
                    PageFrame* q = _m.Pages.AllocPages(Gfp.NoWait, 0);
                    GfpLedger.Count(nowait, q != null);
                    if (q != null) lock (held) held.Add(((nint)q, 0));
                });
                Alloc(Gfp.NoIo, noio);
                Alloc(Gfp.NoFs, nofs);
                Alloc(Gfp.Kernel, kernel);
                // Drivers give their receive buffers back now and then: half of what is held.
                if (round % 4 == 0) FreeHeld(held.Count / 2);

                Thread.Sleep(0);
            }
        }
        hogThread.Join();
        stormThread.Join();
        if (!hog.HasExited) hog.Exit();
        GfpLedger.CountProcess(user, hogFaults, hog.IsKilled ? 1 : 0);

        // One more GFP_KERNEL allocation: with the hog gone it succeeds at once.
        Alloc(Gfp.Kernel, kernel);
        FreeHeld(held.Count);
        reclaim.NotifyFreed();
        reclaim.StallTimeout = stallTimeout;
        progress(100);
        long minSum = _m.Pages.Zones.Sum(z => z.WmarkMin);
        string stormText = stormPages < 0 ? "no packet storm (the hog ended first)"
            : $"a softirq packet storm got {stormPages} GFP_ATOMIC pages, then failed with {stormFreeAtFailure} pages free (min watermarks total {minSum}); " +
              $"GFP_KERNEL at that moment got {kernelAfterStorm} of 64 pages in {kernelAfterStormMs:F1} ms by reclaiming";
        return $"memhog faulted {hogFaults} of {hogPages} pages, {hogEnd}; {stormText}";

        void FreeHeld(int n)
        {
            lock (held)
            {
                for (int i = 0; i < n && held.Count > 0; i++)
                {
                    var (p, o) = held[^1];
                    held.RemoveAt(held.Count - 1);
                    _m.Pages.FreePages((PageFrame*)p, o);
                }
            }
        }

        void Alloc(Gfp gfp, GfpLedger.Entry e)
        {
            PageFrame* p = _m.Pages.AllocPages(gfp | Gfp.NoWarn, 0);
            GfpLedger.Count(e, p != null);
            if (p != null) lock (held) held.Add(((nint)p, 0));
        }
    }

    private string ModuleLoad(Action<long> progress)
    {
        var kernel = _ledger.For("GFP_KERNEL", Gfp.Kernel);
        long bytes = 0;
        int i = 0;
        foreach (var (name, size) in VmallocScenario.Modules)
        {
            byte* p = _m.Vmalloc.VmallocGfp((nuint)size, Gfp.Kernel, "load_module");
            GfpLedger.Count(kernel, p != null);
            if (p != null)
            {
                // "Load" it: write the image so every page is really used.
                new Span<byte>(p, size).Fill((byte)name[0]);
                _modules.Add((nint)p);
                bytes += size;
            }
            progress(++i);
        }
        long lazyBefore = _m.Vmalloc.LazyPages;
        // rmmod half of them: their address ranges wait on the lazy list until a purge.
        for (int k = _modules.Count - 1; k >= _modules.Count / 2; k--)
        {
            _m.Vmalloc.Vfree((void*)_modules[k]);
            _modules.RemoveAt(k);
        }
        return $"{VmallocScenario.Modules.Length} modules ({bytes / 1024} kB) vmalloc'd; after unloading half, {_m.Vmalloc.LazyPages - lazyBefore} pages of address space wait for a lazy purge";
    }

    private long Teardown(out string? inconsistency)
    {
        foreach (var m in _modules) _m.Vmalloc.Vfree((void*)m);
        _modules.Clear();
        foreach (var t in _liveTasks) Exit(t);
        _liveTasks.Clear();
        _pressure.Dispose();
        _dentry?.Dispose();
        _dentry = null;
        _m.Reclaim.PageCache.DropCaches();
        long live = _caches.Sum(c => c.LiveObjects);
        foreach (var c in _caches) _m.Slab.DestroyCache(c);
        _caches.Clear();
        _m.Slab.RcuBarrier();
        _m.Slab.ShrinkAll();
        _m.Vmalloc.FlushDeferred();
        _m.Vmalloc.PurgeVmapAreaLazy();
        _m.Pages.DrainAllPages();
        live += _m.Slab.Caches.Sum(c => c.LiveObjects);
        inconsistency = _m.Pages.CheckInvariants()
                        ?? _m.Slab.Caches.Select(c => c.CheckInvariants()).FirstOrDefault(e => e != null)
                        ?? _m.Vmalloc.CheckInvariants();
        return live;
    }

    // ---------------------------------------------------------------------------------------------------------
    // Output
    // ---------------------------------------------------------------------------------------------------------

    private string SlabinfoExcerpt()
    {
        var lines = ProcViews.Render(_m, "slabinfo").Split('\n');
        var names = new HashSet<string>(_caches.Select(c => c.Name)) { "dentry", "kmalloc-2k", "kmalloc-4k", "kmalloc-64" };
        return string.Join('\n', lines.Where((l, i) => i < 2 || names.Contains(l.Split(' ', 2)[0]))) + "\n";
    }

    /// <summary>The modules, a few thread stacks, and a count of the rest.</summary>
    private static string VmallocExcerpt(string info)
    {
        var all = info.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var sb = new StringBuilder();
        foreach (var l in all.Where(l => l.Contains("load_module", StringComparison.Ordinal))) sb.Append(l).Append('\n');
        var stacks = all.Where(l => l.Contains("kernel_clone", StringComparison.Ordinal)).ToList();
        foreach (var l in stacks.Take(3)) sb.Append(l).Append('\n');
        int unpurged = all.Count(l => l.Contains("unpurged", StringComparison.Ordinal));
        sb.Append($"... {stacks.Count} kernel stacks (kernel_clone) in all, {unpurged} unpurged areas waiting for the lazy purge\n");
        return sb.ToString();
    }

    private static string Excerpt(string text, int lines)
    {
        var all = text.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var sb = new StringBuilder();
        foreach (var l in all.Take(lines)) sb.Append(l).Append('\n');
        if (all.Length > lines) sb.Append($"... ({all.Length - lines} more)\n");
        return sb.ToString();
    }

    public static void WriteJson(Result r, Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("machine", r.Machine);
        w.WriteStartObject("gfp");
        foreach (var e in r.Gfp)
        {
            w.WriteStartObject(e.Name);
            w.WriteNumber("allocations", e.Allocations);
            w.WriteNumber("failures", e.Failures);
            w.WriteNumber("blocked_ms", Math.Round(e.BlockedMs, 3));
            w.WriteStartObject("context");
            w.WriteNumber("process", e.InProcess);
            w.WriteNumber("softirq", e.InSoftirq);
            w.WriteNumber("hardirq", e.InHardirq);
            w.WriteNumber("atomic_other", e.InOtherAtomic);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteEndObject();
        w.WriteStartObject("reclaim");
        w.WriteNumber("kswapd_wakeups", r.Reclaim.KswapdWakeups);
        w.WriteNumber("direct_reclaim", r.Reclaim.DirectReclaimStalls);
        w.WriteNumber("pages_scanned", r.Reclaim.PagesScanned);
        w.WriteNumber("pages_reclaimed", r.Reclaim.PagesReclaimed);
        w.WriteNumber("pages_swapped_out", r.Reclaim.PagesSwappedOut);
        w.WriteNumber("pages_swapped_in", r.Reclaim.PagesSwappedIn);
        w.WriteNumber("compact_stalls", r.Reclaim.CompactStalls);
        w.WriteEndObject();
        w.WriteNumber("oom_kills", r.OomKills);
        w.WriteStartObject("kernel_vs_user");
        var k = r.KernelVsUser;
        w.WriteNumber("bytes", k.Bytes);
        w.WriteNumber("user_mmap_ms", Math.Round(k.UserMmapMs, 3));
        w.WriteNumber("user_rss_after_mmap_kb", k.UserRssAfterMmapKb);
        w.WriteNumber("user_rss_after_touch_kb", k.UserRssAfterTouchKb);
        w.WriteNumber("kernel_alloc_ms", Math.Round(k.KernelAllocMs, 3));
        w.WriteNumber("kernel_allocated_kb", k.KernelAllocatedKb);
        w.WriteEndObject();
        w.WriteStartArray("phases");
        foreach (var (phase, summary, seconds) in r.Phases)
        {
            w.WriteStartObject();
            w.WriteString("name", phase);
            w.WriteString("summary", summary);
            w.WriteNumber("seconds", Math.Round(seconds, 3));
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteNumber("leaked_pages", r.LeakedPages);
        w.WriteNumber("leaked_objects", r.LeakedObjects);
        w.WriteBoolean("consistent", r.Inconsistency == null);
        w.WriteEndObject();
    }

    public void Dispose() => _pressure.Dispose();
}
