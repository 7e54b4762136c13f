namespace Kmem.Cli;

/// <summary>A one-line progress bar on stderr when it is a terminal; a start and an end line otherwise.</summary>
public sealed class ProgressBar
{
    private readonly TextWriter _out;
    private readonly string _label;
    private readonly long _total;
    private readonly bool _interactive;
    private readonly bool _enabled;

    public ProgressBar(TextWriter stdout, string label, long total, bool enabled)
    {
        _out = stdout;
        _label = label;
        _total = Math.Max(1, total);
        _enabled = enabled;
        _interactive = enabled && !Console.IsErrorRedirected && ReferenceEquals(stdout, Console.Out);
        if (_enabled && !_interactive) _out.WriteLine($"{label}: started");
    }

    public void Update(long done)
    {
        if (!_interactive) return;
        double f = Math.Clamp((double)done / _total, 0, 1);
        int filled = (int)(f * 30);
        Console.Error.Write($"\r{_label,-28} [{new string('#', filled)}{new string('.', 30 - filled)}] {f * 100,5:F1}%");
    }

    public void Finish()
    {
        if (_interactive)
        {
            Update(_total);
            Console.Error.WriteLine();
        }
        else if (_enabled)
        {
            _out.WriteLine($"{_label}: done");
        }
    }
}
