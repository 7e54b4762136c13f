using System.Runtime.CompilerServices;
using Kmem.Diagnostics;

namespace Kmem;

/// <summary>
/// The execution context of the calling thread, as Linux keeps it in preempt_count and the CPU's IF flag:
/// process context, softirq, hardirq, NMI, preemption disabled (spinlock held), interrupts disabled.
/// </summary>
/// <remarks>
/// 1. Concepts. Every thread is a "task" in process context until it enters a scope: <see cref="Preempt.Disable"/>,
///    <see cref="KSpinLock"/> (spin_lock = preempt_disable + acquire), <see cref="LocalIrqSave"/>,
///    <see cref="LocalBhDisable"/>, <see cref="RunInSoftirq"/>, <see cref="RunInHardirq"/>, <see cref="RunInNmi"/>.
///    Code that may sleep calls <see cref="MightSleep(Machine, string, int)"/>; from atomic context that is Linux's
///    "BUG: sleeping function called from invalid context".
/// 2. Data structure: one [ThreadStatic] int. Bits 0..23 are Linux's preempt_count layout
///    (include/linux/preempt.h): PREEMPT_MASK 0x000000ff, SOFTIRQ_MASK 0x0000ff00, HARDIRQ_MASK 0x000f0000,
///    NMI_MASK 0x00f00000. Bit 31 (kmem-only) is "interrupts disabled" (the x86 EFLAGS.IF bit, inverted), so that
///    one compare against zero answers "may this thread sleep?" (<see cref="MightSleep(SleepChecker, string, int)"/>).
/// 3. Offsets: PREEMPT_OFFSET 1, SOFTIRQ_OFFSET 0x100 (serving a softirq), SOFTIRQ_DISABLE_OFFSET 0x200
///    (local_bh_disable: 2 * SOFTIRQ_OFFSET, so in_serving_softirq() can tell the two apart), HARDIRQ_OFFSET 0x10000,
///    NMI_OFFSET 0x100000. in_atomic() = preempt_count != 0 (CONFIG_PREEMPT_COUNT);
///    in_interrupt() = preempt_count &amp; (NMI|HARDIRQ|SOFTIRQ).
/// 4. Nesting: every scope records the count it established and checks on exit that it is unwinding the innermost
///    scope; an unbalanced exit is Linux's "BUG: scheduling while atomic"/preempt-count imbalance and throws
///    <see cref="ContextException"/>. Irq state is restored, not cleared, as local_irq_restore does.
/// 5. Interrupts in kmem are not asynchronous: a "hardirq" is a callback run synchronously on the current thread with
///    the hardirq count raised and interrupts disabled (as the CPU does on entry). What matters for the allocators is
///    the state a piece of code observes, and that is exact.
/// </remarks>
public static class Context
{
    public const int PreemptMask = 0x000000ff;
    public const int SoftirqMask = 0x0000ff00;
    public const int HardirqMask = 0x000f0000;
    public const int NmiMask = 0x00f00000;
    public const int PreemptOffset = 1;
    public const int SoftirqOffset = 0x100;
    public const int SoftirqDisableOffset = 2 * SoftirqOffset;
    public const int HardirqOffset = 0x10000;
    public const int NmiOffset = 0x100000;
    private const int IrqsOffBit = unchecked((int)0x80000000);

    [ThreadStatic] private static int t_state;

    /// <summary>preempt_count(): Linux's bit layout (see remarks). What ftrace's flags column shows.</summary>
    public static int PreemptCount
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_state & ~IrqsOffBit;
    }

    /// <summary>irqs_disabled().</summary>
    public static bool IrqsDisabled
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => t_state < 0;
    }

    /// <summary>in_atomic(): preemption disabled for any reason (spinlock, softirq, hardirq, NMI, bh disabled).</summary>
    public static bool InAtomic => PreemptCount != 0;
    /// <summary>in_interrupt(): in NMI, hardirq or softirq context, or with bottom halves disabled.</summary>
    public static bool InInterrupt => (PreemptCount & (NmiMask | HardirqMask | SoftirqMask)) != 0;
    /// <summary>in_softirq(): serving a softirq or bottom halves disabled.</summary>
    public static bool InSoftirq => (PreemptCount & SoftirqMask) != 0;
    /// <summary>in_serving_softirq().</summary>
    public static bool InServingSoftirq => (PreemptCount & SoftirqOffset) != 0;
    /// <summary>in_hardirq().</summary>
    public static bool InHardirq => (PreemptCount & HardirqMask) != 0;
    /// <summary>in_nmi().</summary>
    public static bool InNmi => (PreemptCount & NmiMask) != 0;
    /// <summary>in_task(): process context (not NMI, hardirq or a serving softirq).</summary>
    public static bool InTask => (PreemptCount & (NmiMask | HardirqMask | SoftirqOffset)) == 0;
    /// <summary>preemptible(): preempt_count == 0 and interrupts enabled.</summary>
    public static bool Preemptible => t_state == 0;

    /// <summary>A short name for the context, for reports and summaries: task, softirq, hardirq, nmi, atomic, irqs-off.</summary>
    public static string Describe()
    {
        if (InNmi) return "nmi";
        if (InHardirq) return "hardirq";
        if (InServingSoftirq) return "softirq";
        if (InAtomic) return "atomic";
        if (IrqsDisabled) return "irqs-off";
        return "task";
    }

    // ---- raw primitives (scopes below use them) ----

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int Add(int offset)
    {
        int before = t_state;
        int field = offset switch { PreemptOffset => PreemptMask, HardirqOffset => HardirqMask, NmiOffset => NmiMask, _ => SoftirqMask };
        if ((((before & ~IrqsOffBit) + offset) & field) == 0 && offset > 0) ThrowOverflow(offset);
        t_state = before + offset;
        return t_state;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Sub(int offset, int expectedState, string what)
    {
        if (t_state != expectedState) ThrowUnbalanced(what, expectedState);
        t_state -= offset;
    }

    internal static bool SetIrqsDisabled(bool disabled)
    {
        bool was = t_state < 0;
        t_state = disabled ? t_state | IrqsOffBit : t_state & ~IrqsOffBit;
        return was;
    }

    /// <summary>
    /// Sets the calling thread's context to <paramref name="preemptCount"/> (Linux's layout) and the interrupt state,
    /// returning the previous state for <see cref="RestoreState"/>. For replaying a trace line's context (the flags
    /// column) around one call; not a nesting scope, so it checks nothing.
    /// </summary>
    internal static int EnterState(int preemptCount, bool irqsDisabled)
    {
        int saved = t_state;
        t_state = (preemptCount & ~IrqsOffBit) | (irqsDisabled ? IrqsOffBit : 0);
        return saved;
    }

    /// <summary>Restores a state saved by <see cref="EnterState"/>.</summary>
    internal static void RestoreState(int saved) => t_state = saved;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowOverflow(int offset) =>
        throw new ContextException($"BUG: preempt_count overflow adding 0x{offset:x} to 0x{PreemptCount:x}");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowUnbalanced(string what, int expected) =>
        throw new ContextException($"BUG: {what}: unbalanced context exit in {CurrentTask.Comm}/{CurrentTask.Pid}: " +
                                   $"preempt_count 0x{t_state & ~IrqsOffBit:x} irqs_disabled {(t_state < 0 ? 1 : 0)}, " +
                                   $"expected 0x{expected & ~IrqsOffBit:x} irqs_disabled {(expected < 0 ? 1 : 0)} (scopes must end innermost first)");

    // ---- scopes ----

    /// <summary>local_irq_save(flags) ... local_irq_restore(flags).</summary>
    public static IrqSaveScope LocalIrqSave() => new(SetIrqsDisabled(true));

    /// <summary>local_bh_disable() ... local_bh_enable(): in_softirq() becomes true, in_serving_softirq() stays false.</summary>
    public static CountScope LocalBhDisable() => new(SoftirqDisableOffset, Add(SoftirqDisableOffset), "local_bh_enable");

    /// <summary>Run <paramref name="handler"/> as a softirq (net_rx_action, a timer): SOFTIRQ_OFFSET raised, interrupts enabled.</summary>
    public static void RunInSoftirq(Action handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        int saved = t_state;
        int inside = Add(SoftirqOffset);
        SetIrqsDisabled(false);
        inside &= ~IrqsOffBit;
        try { handler(); }
        finally
        {
            if ((t_state & ~IrqsOffBit) != (inside & ~IrqsOffBit)) ThrowUnbalanced("softirq exit", inside);
            t_state = saved;
        }
    }

    /// <summary>Run <paramref name="handler"/> as a hard interrupt handler: HARDIRQ_OFFSET raised, interrupts disabled.</summary>
    public static void RunInHardirq(Action handler) => RunWith(HardirqOffset, handler, "irq_exit");

    /// <summary>Run <paramref name="handler"/> as an NMI handler.</summary>
    public static void RunInNmi(Action handler) => RunWith(NmiOffset, handler, "nmi_exit");

    private static void RunWith(int offset, Action handler, string what)
    {
        ArgumentNullException.ThrowIfNull(handler);
        int saved = t_state;
        Add(offset);
        SetIrqsDisabled(true);
        int inside = t_state;
        try { handler(); }
        finally
        {
            if (t_state != inside) ThrowUnbalanced(what, inside);
            t_state = saved;
        }
    }

    // ---- might_sleep ----

    /// <summary>
    /// might_sleep(): report (Linux's "BUG: sleeping function called from invalid context") when the calling thread
    /// is atomic or has interrupts disabled. Cheap: one thread-static load and compare when all is well.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MightSleep(Machine machine, [CallerFilePath] string file = "", [CallerLineNumber] int line = 0)
    {
        if (t_state != 0) machine.SleepCheck.Report(file, line);
    }

    /// <summary>might_sleep() for code that holds a <see cref="SleepChecker"/> rather than the machine.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MightSleep(SleepChecker check, [CallerFilePath] string file = "", [CallerLineNumber] int line = 0)
    {
        if (t_state != 0) check.Report(file, line);
    }

    /// <summary>might_sleep_if(gfpflags_allow_blocking(gfp)) = might_alloc(gfp).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MightAlloc(Machine machine, Gfp gfp, [CallerFilePath] string file = "", [CallerLineNumber] int line = 0)
    {
        if ((gfp & Gfp.DirectReclaim) != 0 && t_state != 0) machine.SleepCheck.Report(file, line);
    }
}

/// <summary>Restores the interrupt state saved by <see cref="Context.LocalIrqSave"/>.</summary>
public readonly struct IrqSaveScope : IDisposable
{
    private readonly bool _wasDisabled;
    internal IrqSaveScope(bool wasDisabled) => _wasDisabled = wasDisabled;
    /// <summary>Did interrupts start out disabled (the saved flags)?</summary>
    public bool WasDisabled => _wasDisabled;
    public void Dispose() => Context.SetIrqsDisabled(_wasDisabled);
}

/// <summary>Undoes one preempt-count increment (preempt_enable, local_bh_enable); checks it unwinds the innermost scope.</summary>
public readonly struct CountScope : IDisposable
{
    private readonly int _offset;
    private readonly int _state;
    private readonly string _what;
    internal CountScope(int offset, int state, string what)
    {
        _offset = offset;
        _state = state;
        _what = what;
    }
    public void Dispose() => Context.Sub(_offset, (_state & 0x7fffffff) | (Context.IrqsDisabled ? unchecked((int)0x80000000) : 0), _what);
}

/// <summary>preempt_disable() / preempt_enable().</summary>
public static class Preempt
{
    /// <summary>preempt_disable(); dispose for preempt_enable().</summary>
    public static CountScope Disable() => new(Context.PreemptOffset, Context.Add(Context.PreemptOffset), "preempt_enable");
}

/// <summary>What <see cref="Context.MightSleep(Machine, string, int)"/> does when it finds an atomic caller.</summary>
public enum MightSleepMode
{
    /// <summary>Log the report and throw <see cref="SleepInAtomicException"/> (the default: tests see the bug at once).</summary>
    Throw,
    /// <summary>Log the report and carry on, as a Linux kernel does.</summary>
    Warn,
}

/// <summary>A machine's might_sleep reporter: its mode, and how many reports it made.</summary>
public sealed class SleepChecker
{
    private readonly KernelLog _log;
    private long _reports;

    public SleepChecker(KernelLog log) => _log = log;

    public MightSleepMode Mode { get; set; } = MightSleepMode.Throw;
    /// <summary>Reports made so far.</summary>
    public long Reports => Interlocked.Read(ref _reports);

    /// <summary>The text of __might_sleep's report for the calling thread (without the stack dump).</summary>
    public static string ReportText(string file, int line)
    {
        int pc = Context.PreemptCount;
        return $"BUG: sleeping function called from invalid context at {ShortPath(file)}:{line}\n" +
               $"in_atomic(): {(Context.InAtomic ? 1 : 0)}, irqs_disabled(): {(Context.IrqsDisabled ? 1 : 0)}, non_block: 0, pid: {CurrentTask.Pid}, name: {CurrentTask.Comm}\n" +
               $"preempt_count: {pc:x}, expected: 0\n" +
               "RCU nest depth: 0, expected: 0";
    }

    /// <summary>The path as Linux prints __FILE__: relative to the source root (here, below src/).</summary>
    public static string ShortPath(string file)
    {
        if (string.IsNullOrEmpty(file)) return "?";
        string f = file.Replace('\\', '/');
        int i = f.LastIndexOf("/src/", StringComparison.Ordinal);
        return i >= 0 ? f[(i + 5)..] : Path.GetFileName(f);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    public void Report(string file, int line)
    {
        string text = ReportText(file, line);
        Interlocked.Increment(ref _reports);
        _log.Write(LogLevel.Err, text);
        if (Mode == MightSleepMode.Throw) throw new SleepInAtomicException(text);
    }
}

/// <summary>A sleeping function was called from atomic context (might_sleep's BUG report).</summary>
public sealed class SleepInAtomicException : KmemException
{
    public SleepInAtomicException(string report) : base(report) { }
}

/// <summary>A context scope was exited out of order, or a count overflowed.</summary>
public sealed class ContextException : KmemException
{
    public ContextException(string report) : base(report) { }
}
