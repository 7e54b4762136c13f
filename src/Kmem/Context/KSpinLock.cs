using System.Runtime.CompilerServices;
using Kmem.Diagnostics;

namespace Kmem;

/// <summary>
/// spinlock_t: a real busy-waiting lock that disables preemption while held, so that anything which may sleep
/// inside it is reported by might_sleep. Variants as Linux's: <see cref="Lock"/>/<see cref="Unlock"/>,
/// <see cref="LockIrqSave"/> (spin_lock_irqsave), <see cref="LockBh"/> (spin_lock_bh), and
/// <see cref="Acquire"/> for a using-scope.
/// </summary>
/// <remarks>
/// State: <c>_owner</c> is the managed thread id of the holder, 0 when free (polarity: nonzero = held). Acquiring it
/// twice on one thread is Linux's "BUG: spinlock recursion" (a real spinlock would spin forever); kmem reports and
/// throws instead of hanging. Unlocking a lock the thread does not hold is "BUG: spinlock wrong owner".
/// Not fair and not a sleeping lock: waiters spin (with <see cref="SpinWait"/>, which yields on a busy host).
/// </remarks>
public sealed class KSpinLock
{
    private int _owner;

    public string Name { get; }
    public KSpinLock(string name = "lock") => Name = name;

    /// <summary>spin_is_locked().</summary>
    public bool IsLocked => Volatile.Read(ref _owner) != 0;
    /// <summary>Does the calling thread hold it (lockdep_assert_held)?</summary>
    public bool IsHeldByCurrentThread => Volatile.Read(ref _owner) == Environment.CurrentManagedThreadId;

    /// <summary>spin_lock(): preempt_disable(), then acquire.</summary>
    public void Lock()
    {
        Context.Add(Context.PreemptOffset);
        Acquire0();
    }

    /// <summary>spin_trylock().</summary>
    public bool TryLock()
    {
        Context.Add(Context.PreemptOffset);
        int me = Environment.CurrentManagedThreadId;
        if (Interlocked.CompareExchange(ref _owner, me, 0) == 0) return true;
        Context.Sub(Context.PreemptOffset, Context.PreemptCount | (Context.IrqsDisabled ? unchecked((int)0x80000000) : 0), "spin_trylock");
        return false;
    }

    /// <summary>spin_unlock(): release, then preempt_enable().</summary>
    public void Unlock()
    {
        int me = Environment.CurrentManagedThreadId;
        if (Interlocked.CompareExchange(ref _owner, 0, me) != me) ThrowWrongOwner();
        Context.Sub(Context.PreemptOffset, Context.PreemptCount | (Context.IrqsDisabled ? unchecked((int)0x80000000) : 0), "spin_unlock");
    }

    /// <summary>spin_lock(); dispose for spin_unlock().</summary>
    public Guard Acquire()
    {
        Lock();
        return new Guard(this, GuardKind.Plain, false);
    }

    /// <summary>spin_lock_irqsave(lock, flags); dispose for spin_unlock_irqrestore(lock, flags).</summary>
    public Guard LockIrqSave()
    {
        bool was = Context.SetIrqsDisabled(true);
        Lock();
        return new Guard(this, GuardKind.IrqSave, was);
    }

    /// <summary>spin_lock_bh(); dispose for spin_unlock_bh().</summary>
    public Guard LockBh()
    {
        Context.Add(Context.SoftirqDisableOffset);
        Lock();
        return new Guard(this, GuardKind.Bh, false);
    }

    private void Acquire0()
    {
        int me = Environment.CurrentManagedThreadId;
        if (Interlocked.CompareExchange(ref _owner, me, 0) == 0) return;
        if (Volatile.Read(ref _owner) == me) ThrowRecursion();
        var spin = new SpinWait();
        while (Volatile.Read(ref _owner) != 0 || Interlocked.CompareExchange(ref _owner, me, 0) != 0) spin.SpinOnce();
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowRecursion()
    {
        Context.Sub(Context.PreemptOffset, Context.PreemptCount | (Context.IrqsDisabled ? unchecked((int)0x80000000) : 0), "spin_lock");
        throw new ContextException($"BUG: spinlock recursion on CPU#{Cpu.Current(256)}, {CurrentTask.Comm}/{CurrentTask.Pid}\n lock: {Name}, .magic: dead4ead, .owner: {CurrentTask.Comm}/{CurrentTask.Pid}, .owner_cpu: {Cpu.Current(256)}");
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowWrongOwner() =>
        throw new ContextException($"BUG: spinlock wrong owner on CPU#{Cpu.Current(256)}, {CurrentTask.Comm}/{CurrentTask.Pid}\n lock: {Name}, .magic: dead4ead, .owner_thread: {Volatile.Read(ref _owner)}");

    internal enum GuardKind : byte { Plain, IrqSave, Bh }

    /// <summary>The held lock; dispose to release it (and restore irqs / re-enable bottom halves as the variant requires).</summary>
    public readonly struct Guard : IDisposable
    {
        private readonly KSpinLock _lock;
        private readonly GuardKind _kind;
        private readonly bool _irqsWereDisabled;
        internal Guard(KSpinLock l, GuardKind kind, bool irqsWereDisabled)
        {
            _lock = l;
            _kind = kind;
            _irqsWereDisabled = irqsWereDisabled;
        }

        public void Dispose()
        {
            _lock.Unlock();
            if (_kind == GuardKind.IrqSave) Context.SetIrqsDisabled(_irqsWereDisabled);
            else if (_kind == GuardKind.Bh) Context.Sub(Context.SoftirqDisableOffset, Context.PreemptCount | (Context.IrqsDisabled ? unchecked((int)0x80000000) : 0), "spin_unlock_bh");
        }
    }
}
