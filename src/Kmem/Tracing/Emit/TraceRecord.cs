using System.Runtime.InteropServices;

namespace Kmem.Tracing.Emit;

/// <summary>
/// One recorded event in a per-CPU ring buffer: 80 bytes, blittable, no references (texts are ids into
/// <see cref="Tracepoints.Labels"/>). Field use per kind mirrors <see cref="TraceEvent"/>:
/// A = ptr / page / va_start / start, B = pfn / size / nr_lazy / end, C = bytes_req / align / nr_lazy_max /
/// nr_reclaimed, D = bytes_alloc / vstart, E = vend; Order = order / alloc_order; Extra = migratetype / node /
/// failed / num_purged / nid / victim pid; Extra2 = fallback order, percpu_refill; Extra3 = fallback migratetype.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct TraceRecord
{
    public long Ticks;
    public ulong A, B;
    public long C, D;
    public ulong E;
    public int Pid, CallSite, Name, CommId;
    public uint Gfp;
    public int Order, Extra, Extra2, Extra3;
    public EventKind Kind;
    public byte Cpu;
    public byte Context;   // TraceContextFlags low byte: irqs-off, bh-off, softirq, hardirq...
    public byte Preempt;   // preempt depth (bits 0-3) | migrate-disable depth (bits 4-6) | NmiBit

    /// <summary>Bit of <see cref="Preempt"/> set in NMI context (TraceContextFlags.Nmi is wider than <see cref="Context"/>).</summary>
    public const byte NmiBit = 0x80;
}
