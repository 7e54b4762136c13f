namespace Kmem;

/// <summary>
/// Linux's <c>enum zone_type</c>, as a fixed superset. Linux numbers zones per configuration
/// (x86_64: DMA, DMA32, NORMAL, MOVABLE, DEVICE; x86_32: DMA, NORMAL, HIGHMEM, MOVABLE); kmem keeps one
/// numbering and lets each <c>ArchProfile</c> say which zones it has. Views print only the profile's zones.
/// </summary>
public enum ZoneType : byte
{
    Dma = 0,
    Dma32 = 1,
    Normal = 2,
    HighMem = 3,
    Movable = 4,
    Device = 5,
}

/// <summary>Linux's <c>enum migratetype</c> (MIGRATE_PCPTYPES = 3: the first three have per-CPU lists).</summary>
public enum MigrateType : byte
{
    Unmovable = 0,
    Movable = 1,
    Reclaimable = 2,
    HighAtomic = 3,
    Isolate = 4,
}
