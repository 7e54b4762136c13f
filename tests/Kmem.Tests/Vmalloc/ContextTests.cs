
namespace Kmem.Tests.Vmalloc;

using Gfp = global::Kmem.Gfp;
using Context = global::Kmem.Context;

/// <summary>vmalloc and kmap against execution contexts (hardirq, spinlock held).</summary>
public unsafe class VmallocContextTests
{
    [Fact]
    public void VfreeFromHardirq_IsDeferred_AndDoneByTheWork()
    {
        using var m = VmallocTests.Boot64();
        byte* p = m.Vmalloc.Vmalloc(8 * 4096);
        Context.RunInHardirq(() => m.Vmalloc.Vfree(p)); // an interrupt handler frees: no sleeping, no report
        Assert.Equal(0, m.Vmalloc.Highmem.Waiters);
        m.Vmalloc.FlushDeferred();
        Assert.Equal(0, m.Vmalloc.BusyAreas);
        Assert.Equal(0, m.SleepCheck.Reports);
        VmallocTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void VmallocAndVfreeUnderASpinlock_AreSleepingInAtomicBugs()
    {
        using var m = VmallocTests.Boot64();
        byte* p = m.Vmalloc.Vmalloc(4096);
        using (Preempt.Disable())
        {
            Assert.ThrowsAny<KmemException>(() => m.Vmalloc.Vmalloc(4096));
            Assert.ThrowsAny<KmemException>(() => m.Vmalloc.Vfree(p));
            m.Vmalloc.VfreeAtomic(p); // the atomic-safe way
        }
        Assert.True(m.Log.Contains("BUG: sleeping function called from invalid context"));
        VmallocTests.AssertNothingLeaked(m);
    }

    [Fact]
    public void KmapInAtomicIsReported_KmapLocalIsFine()
    {
        using var m = VmallocTests.Boot32();
        PageFrame* page = m.Pages.AllocPages(Gfp.HighUser, 0);
        Context.RunInHardirq(() =>
        {
            Assert.ThrowsAny<KmemException>(() => m.Vmalloc.Highmem.Kmap(page));
            byte* l = m.Vmalloc.Highmem.KmapLocalPage(page);
            l[0] = 7;
            m.Vmalloc.Highmem.KunmapLocal(l);
        });
        Assert.Equal(0, m.Vmalloc.Highmem.PkmapInUse);
        m.Pages.FreePages(page, 0);
        VmallocTests.AssertNothingLeaked(m);
    }
}
