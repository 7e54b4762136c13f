using static Kmem.Linux.KernelApi;

namespace Kmem.Tests.Linux;

/// <summary>The Linux-spelled facade reaches every layer of one machine, and what it hands out is real memory.</summary>
public unsafe class KernelApiTests
{
    [Fact]
    public void Teaching_snippet_runs_against_the_current_machine()
    {
        using var m = Machine.Boot();
        Use(m);
        try
        {
            PageFrame* page = alloc_pages(GFP_KERNEL, 2);
            Assert.True(page != null);
            byte* addr = page_address(page);
            addr[0] = 0x5a;
            Assert.Equal(0x5a, __va(__pa(addr))[0]);
            Assert.True(virt_to_page(addr) == page);
            Assert.Equal(page_to_pfn(page), (long)(__pa(addr) >> 12));
            __free_pages(page, 2);

            byte* zero = get_zeroed_page(GFP_KERNEL);
            Assert.Equal(0, zero[4095]);
            free_page(zero);

            void* obj = kmalloc(100, GFP_KERNEL);
            Assert.Equal((nuint)128, ksize(obj));
            kfree(obj);

            byte* big = vmalloc(1 << 20);
            Assert.True(is_vmalloc_addr(big));
            big[(1 << 20) - 1] = 7;
            Assert.Equal(7, page_address(vmalloc_to_page(big + (1 << 20) - 1))[4095]);
            vfree(big);

            void* kv = kvmalloc(64 << 10, GFP_KERNEL);
            Assert.True(kv != null);
            kvfree(kv);

            Assert.Equal(3, get_order(5 * 4096 + 1));
            m.Vmalloc.FlushDeferred();
            m.Vmalloc.PurgeVmapAreaLazy();
            m.Slab.ShrinkAll();
            m.Pages.DrainAllPages();
            Assert.Equal(m.TotalRamPages, m.FreePages);
        }
        finally
        {
            Use(null);
        }
    }
}
