namespace Kmem.Tests.Context;

using Kmem;
using Ctx = Kmem.Context;

public unsafe class ContextTests
{
    private static Machine Small() => Machine.Boot(new MachineConfig { ZoneManagedPages = new Dictionary<ZoneType, long> { [ZoneType.Dma32] = 4096 } });

    [Fact]
    public void ProcessContextIsPreemptibleWithCountZero()
    {
        Assert.Equal(0, Ctx.PreemptCount);
        Assert.False(Ctx.IrqsDisabled);
        Assert.True(Ctx.InTask);
        Assert.False(Ctx.InAtomic);
    }

    [Fact]
    public void ScopesNestWithLinuxBitLayout()
    {
        var l = new KSpinLock("test");
        using (l.Acquire())
        {
            Assert.Equal(1, Ctx.PreemptCount);
            Assert.True(Ctx.InAtomic);
            Assert.False(Ctx.InInterrupt);
            using (Ctx.LocalIrqSave())
            {
                Assert.True(Ctx.IrqsDisabled);
                using (Preempt.Disable()) Assert.Equal(2, Ctx.PreemptCount);
            }
            Assert.False(Ctx.IrqsDisabled);
        }
        Ctx.RunInSoftirq(() =>
        {
            Assert.Equal(0x100, Ctx.PreemptCount);
            Assert.True(Ctx.InServingSoftirq && Ctx.InSoftirq && Ctx.InInterrupt && !Ctx.InTask);
            Assert.False(Ctx.IrqsDisabled);
            Ctx.RunInHardirq(() =>
            {
                Assert.Equal(0x10100, Ctx.PreemptCount);
                Assert.True(Ctx.InHardirq && Ctx.IrqsDisabled);
            });
            Assert.False(Ctx.IrqsDisabled);
        });
        using (Ctx.LocalBhDisable())
        {
            Assert.Equal(0x200, Ctx.PreemptCount);
            Assert.True(Ctx.InSoftirq);
            Assert.False(Ctx.InServingSoftirq);
        }
        using (l.LockIrqSave())
        {
            Assert.True(Ctx.IrqsDisabled);
            Assert.Equal(1, Ctx.PreemptCount);
        }
        Assert.Equal(0, Ctx.PreemptCount);
        Assert.False(Ctx.IrqsDisabled);
    }

    [Fact]
    public void UnbalancedExitIsReported()
    {
        var outer = Preempt.Disable();
        var inner = Preempt.Disable();
        Assert.Throws<ContextException>(() => outer.Dispose());
        inner.Dispose();
        outer.Dispose();
        Assert.Equal(0, Ctx.PreemptCount);
    }

    [Fact]
    public void SpinlockRecursionIsReportedNotHung()
    {
        var l = new KSpinLock("rec");
        l.Lock();
        var e = Assert.Throws<ContextException>(() => l.Lock());
        Assert.Contains("spinlock recursion", e.Message);
        l.Unlock();
        Assert.Equal(0, Ctx.PreemptCount);
    }

    [Fact]
    public void SleepingAllocationUnderSpinlockIsReported()
    {
        using var m = Small();
        var l = new KSpinLock("zone");
        l.Lock();
        try
        {
            var e = Assert.Throws<SleepInAtomicException>(() => { m.Pages.AllocPages(Gfp.Kernel, 0); });
            Assert.StartsWith("BUG: sleeping function called from invalid context at Kmem/PageAlloc/PageAllocator.cs:", e.Report);
            Assert.Contains("in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: ", e.Report);
            Assert.Contains("preempt_count: 1, expected: 0", e.Report);
            // GFP_ATOMIC is what atomic context must use.
            PageFrame* p = m.Pages.AllocPages(Gfp.Atomic, 0);
            Assert.True(p != null);
            m.Pages.FreePages(p, 0);
        }
        finally { l.Unlock(); }
        Assert.True(m.Log.Contains("BUG: sleeping function called from invalid context"));
    }

    [Fact]
    public void WarnModeLogsAndContinues()
    {
        using var m = Small();
        m.SleepCheck.Mode = MightSleepMode.Warn;
        PageFrame* p = null;
        Ctx.RunInHardirq(() => p = m.Pages.AllocPages(Gfp.Kernel, 0));
        Assert.True(p != null);
        m.Pages.FreePages(p, 0);
        Assert.Equal(1, m.SleepCheck.Reports);
        Assert.Contains(m.Log.Lines, l => l.Contains("in_atomic(): 1, irqs_disabled(): 1") && l.Contains("preempt_count: 10000"));
    }

    [Fact]
    public void MightSleepHelperIsSilentInProcessContext()
    {
        using var m = Small();
        Ctx.MightSleep(m);
        Ctx.MightAlloc(m, Gfp.Atomic);
        using (Ctx.LocalIrqSave()) Ctx.MightAlloc(m, Gfp.NoWait);
        Assert.Equal(0, m.SleepCheck.Reports);
        using (Ctx.LocalIrqSave()) Assert.Throws<SleepInAtomicException>(() => Ctx.MightSleep(m));
    }
}
