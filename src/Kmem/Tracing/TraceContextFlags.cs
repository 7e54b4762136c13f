namespace Kmem.Tracing;

/// <summary>
/// The context bits of ftrace's latency-format column (<c>trace_print_lat_fmt</c> in kernel/trace/trace_output.c),
/// decoded from its first three characters. The preempt and migrate-disable depths (characters 4 and 5) are kept
/// separately in <see cref="TraceEvent"/>.
/// <code>
///   char 1  irqs:    '.' on   'd' IRQS_OFF   'b' BH_OFF   'D' IRQS_OFF+BH_OFF   'X' IRQS_NOSUPPORT
///   char 2  resched: '.'  'n' NEED_RESCHED  'p' PREEMPT_RESCHED  'N' both  'l' NEED_RESCHED_LAZY
///                    'L' LAZY+PREEMPT  'b' NEED+LAZY  'B' all three
///   char 3  context: '.' task  's' SOFTIRQ  'h' HARDIRQ  'H' HARDIRQ+SOFTIRQ  'z' NMI  'Z' NMI+HARDIRQ
///   char 4  preempt_count &amp; 0xf as a hex digit, '.' for 0
///   char 5  migrate-disable depth (preempt_count &gt;&gt; 4) as a hex digit, '.' for 0 (absent before Linux 5.13)
/// </code>
/// </summary>
[Flags]
public enum TraceContextFlags : ushort
{
    /// <summary>Process context, interrupts on, nothing pending.</summary>
    None = 0,
    /// <summary>TRACE_FLAG_IRQS_OFF: local interrupts were disabled ('d' or 'D').</summary>
    IrqsOff = 1 << 0,
    /// <summary>TRACE_FLAG_BH_OFF: bottom halves were disabled ('b' or 'D' in the first character).</summary>
    BhOff = 1 << 1,
    /// <summary>TRACE_FLAG_IRQS_NOSUPPORT: the architecture cannot report the IRQ state ('X').</summary>
    IrqsNoSupport = 1 << 2,
    /// <summary>TRACE_FLAG_NEED_RESCHED: TIF_NEED_RESCHED was set.</summary>
    NeedResched = 1 << 3,
    /// <summary>TRACE_FLAG_NEED_RESCHED_LAZY: TIF_NEED_RESCHED_LAZY was set (PREEMPT_LAZY, Linux 6.13+).</summary>
    NeedReschedLazy = 1 << 4,
    /// <summary>TRACE_FLAG_PREEMPT_RESCHED: the preempt count's need-resched bit was set.</summary>
    PreemptResched = 1 << 5,
    /// <summary>TRACE_FLAG_SOFTIRQ: serving a softirq.</summary>
    Softirq = 1 << 6,
    /// <summary>TRACE_FLAG_HARDIRQ: in a hardware interrupt handler.</summary>
    Hardirq = 1 << 7,
    /// <summary>TRACE_FLAG_NMI: in a non-maskable interrupt.</summary>
    Nmi = 1 << 8,
}
