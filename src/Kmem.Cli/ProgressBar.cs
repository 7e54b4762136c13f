namespace Kmem.Cli;

/// <summary>
/// A one-line progress bar on stderr when stderr is a terminal (nothing otherwise, so piped output stays clean).
/// Updates may come from any thread; they are throttled to ten redraws a second.
/// </summary>
public sealed class ProgressBar
{
    private readonly string _label;
    private readonly long _total;
    private readonly bool _interactive;
    private readonly Lock _lock = new();
    private long _lastDraw;

    public ProgressBar(TextWriter stdout, string label, long total, bool enabled)
    {
        _label = label;
        _total = Math.Max(1, total);
        _interactive = enabled && !Console.IsErrorRedirected && ReferenceEquals(stdout, Console.Out);
    }

    public void Update(long done)
    {
        if (!_interactive) return;
        long now = Environment.TickCount64;
        lock (_lock)
        {
            if (now - _lastDraw < 100 && done < _total) return;
            _lastDraw = now;
            double f = Math.Clamp((double)done / _total, 0, 1);
            int filled = (int)(f * 30);
            Console.Error.Write($"\r{_label,-32} [{new string('#', filled)}{new string('.', 30 - filled)}] {f * 100,5:F1}%");
        }
    }

    public void Finish()
    {
        if (!_interactive) return;
        Update(_total);
        lock (_lock) Console.Error.Write("\r" + new string(' ', 75) + "\r");
    }
}
