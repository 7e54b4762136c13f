using System.Runtime.InteropServices;

namespace Kmem.Reclaim;

/// <summary>
/// A swap area of N page slots in native memory (a swapfile, without the disk): swap_map as a bitmap, slot 0 kept
/// for the header as Linux's swap area does. A swap entry stored in a PTE is the slot number.
/// </summary>
/// <remarks>Locking: <c>_lock</c> (si->lock) protects the bitmap and the free count. Data copies happen outside it:
/// a slot belongs to exactly one PTE between <see cref="Alloc"/> and <see cref="Free"/>.</remarks>
public sealed unsafe class SwapDevice : IDisposable
{
    private readonly Lock _lock = new();
    private readonly ulong[] _used;
    private byte* _data;
    private long _free;
    private long _next = 1;

    public long TotalPages { get; }
    public long FreePages => Interlocked.Read(ref _free);

    public SwapDevice(long pages)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(pages, 2);
        TotalPages = pages;
        _used = new ulong[(pages + 63) / 64];
        _used[0] = 1; // slot 0: the swap header
        _free = pages - 1;
        _data = (byte*)NativeMemory.AllocZeroed((nuint)pages * ArchProfile.PageSize);
    }

    /// <summary>get_swap_page: a free slot, or -1 when the device is full.</summary>
    public long Alloc()
    {
        lock (_lock)
        {
            if (_free == 0) return -1;
            for (long i = 0; i < TotalPages; i++)
            {
                long s = (_next + i) % TotalPages;
                if ((_used[s >> 6] & (1UL << (int)(s & 63))) == 0)
                {
                    _used[s >> 6] |= 1UL << (int)(s & 63);
                    _free--;
                    _next = s + 1;
                    return s;
                }
            }
            return -1;
        }
    }

    /// <summary>swap_free.</summary>
    public void Free(long slot)
    {
        lock (_lock)
        {
            if (slot <= 0 || slot >= TotalPages || (_used[slot >> 6] & (1UL << (int)(slot & 63))) == 0)
                throw new KmemException($"swap_free: Bad swap offset entry {slot:x8}");
            _used[slot >> 6] &= ~(1UL << (int)(slot & 63));
            _free++;
        }
    }

    public Span<byte> Slot(long slot) => new(_data + slot * ArchProfile.PageSize, ArchProfile.PageSize);

    public void Dispose()
    {
        if (_data != null)
        {
            NativeMemory.Free(_data);
            _data = null;
        }
    }
}
