namespace Kmem.Diagnostics;

/// <summary>Log levels as printk's KERN_*.</summary>
public enum LogLevel { Emerg, Alert, Crit, Err, Warning, Notice, Info, Debug }

/// <summary>
/// The machine's printk ring (what dmesg shows): reports of bad frees, allocation failures, OOM kills.
/// Keeps the last <see cref="Capacity"/> messages; an optional sink echoes them (the CLI prints warnings to stderr).
/// Writing allocates; only error and slow paths write.
/// </summary>
public sealed class KernelLog
{
    private readonly Lock _lock = new();
    private readonly Queue<(LogLevel Level, string Text)> _ring = new();
    private long _count;

    public int Capacity { get; init; } = 1024;
    /// <summary>Called for every message, outside the log's lock.</summary>
    public Action<LogLevel, string>? Sink { get; set; }
    public long Count => Interlocked.Read(ref _count);

    public void Write(LogLevel level, string text)
    {
        lock (_lock)
        {
            _ring.Enqueue((level, text));
            while (_ring.Count > Capacity) _ring.Dequeue();
            _count++;
        }
        Sink?.Invoke(level, text);
    }

    public IReadOnlyList<string> Lines
    {
        get { lock (_lock) return _ring.Select(e => e.Text).ToList(); }
    }

    public bool Contains(string fragment)
    {
        lock (_lock) return _ring.Any(e => e.Text.Contains(fragment, StringComparison.Ordinal));
    }

    public void Clear()
    {
        lock (_lock) _ring.Clear();
    }
}
