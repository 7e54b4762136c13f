namespace Kmem.Diagnostics;

/// <summary>
/// printk_ratelimit() state: at most <see cref="Burst"/> messages per <see cref="IntervalMs"/> (Linux's
/// DEFAULT_RATELIMIT_BURST = 10 and DEFAULT_RATELIMIT_INTERVAL = 5 s); the rest are counted and reported as
/// "NAME: N callbacks suppressed" when the next window opens. Only slow (reporting) paths use it.
/// </summary>
public sealed class RateLimit(KernelLog log, string name)
{
    public const int Burst = 10;
    public const long IntervalMs = 5000;

    private readonly Lock _lock = new();
    private long _windowStart;
    private int _count;
    private long _suppressed;

    /// <summary>May one more message be printed now?</summary>
    public bool Allow()
    {
        long now = Environment.TickCount64;
        lock (_lock)
        {
            if (now - _windowStart > IntervalMs)
            {
                if (_suppressed > 0) log.Write(LogLevel.Warning, $"{name}: {_suppressed} callbacks suppressed");
                _windowStart = now;
                _count = 0;
                _suppressed = 0;
            }
            if (++_count <= Burst) return true;
            _suppressed++;
            return false;
        }
    }
}
