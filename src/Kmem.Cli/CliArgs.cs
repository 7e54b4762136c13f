namespace Kmem.Cli;

/// <summary>A command line split into options (<c>--name value</c>, <c>--name=value</c>, bare flags) and positional words.</summary>
public sealed class CliArgs
{
    private readonly Dictionary<string, string?> _options = new(StringComparer.Ordinal);
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);
    public List<string> Positional { get; } = new();
    /// <summary>Words after a bare <c>--</c> (e.g. the command of <c>kmem trace capture OUT -- COMMAND</c>).</summary>
    public List<string> Rest { get; } = new();

    /// <summary>Options that never take a value.</summary>
    private static readonly HashSet<string> s_flags = new(StringComparer.Ordinal)
    {
        "json", "strict", "help", "no-progress", "quick", "no-memfd", "ctor",
    };

    public CliArgs(IEnumerable<string> args)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            string a = list[i];
            if (a == "--")
            {
                Rest.AddRange(list.Skip(i + 1));
                break;
            }
            if (a.StartsWith("--", StringComparison.Ordinal) && a.Length > 2)
            {
                string name = a[2..];
                string? value = null;
                int eq = name.IndexOf('=');
                if (eq >= 0)
                {
                    value = name[(eq + 1)..];
                    name = name[..eq];
                }
                else if (!s_flags.Contains(name) && i + 1 < list.Count && !list[i + 1].StartsWith("--", StringComparison.Ordinal))
                {
                    value = list[++i];
                }
                _options[name] = value;
            }
            else if (a == "-h")
            {
                _options["help"] = null;
            }
            else
            {
                Positional.Add(a);
            }
        }
    }

    public bool Has(string name)
    {
        _used.Add(name);
        return _options.ContainsKey(name);
    }

    public string? Get(string name)
    {
        _used.Add(name);
        return _options.TryGetValue(name, out var v) ? v : null;
    }

    public string Require(string name) => Get(name) ?? throw new CliException($"--{name} needs a value");

    public int GetInt(string name, int fallback)
    {
        var v = Get(name);
        if (v == null) return fallback;
        return int.TryParse(v, out int n) ? n : throw new CliException($"--{name}: '{v}' is not a whole number");
    }

    public long GetLong(string name, long fallback)
    {
        var v = Get(name);
        if (v == null) return fallback;
        return long.TryParse(v, out long n) ? n : throw new CliException($"--{name}: '{v}' is not a whole number");
    }

    /// <summary>Fail on options nobody asked for (a typo must not be silently ignored).</summary>
    public void RejectUnknown()
    {
        foreach (var k in _options.Keys)
            if (!_used.Contains(k)) throw new CliException($"unknown option --{k}");
    }

    /// <summary>Parse sizes like 512M, 4G, 64K, 4096 (bytes).</summary>
    public static long ParseSize(string text, string what)
    {
        string t = text.Trim();
        long mult = 1;
        if (t.Length > 0)
        {
            char c = char.ToUpperInvariant(t[^1]);
            if (c == 'B' && t.Length > 1 && char.IsLetter(t[^2])) { t = t[..^1]; c = char.ToUpperInvariant(t[^1]); }
            mult = c switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, 'T' => 1L << 40, _ => 1 };
            if (mult != 1) t = t[..^1];
        }
        if (!long.TryParse(t, out long n) || n <= 0 || n > long.MaxValue / mult)
            throw new CliException($"{what}: '{text}' is not a size (e.g. 512M, 4G)");
        return n * mult;
    }
}

/// <summary>A usage error: printed as one line, exit code 2.</summary>
public sealed class CliException(string message) : Exception(message);
