namespace Kmem.Cli;

/// <summary>The boot options every command accepts: --profile, --ram, --zones, --cpus, --min-free-kbytes, --vmalloc.</summary>
public static class BootOptions
{
    public const string Help =
        "boot options: --profile x86_64|x86_32  --ram SIZE (512M, 4G)  --zones DMA=PAGES,DMA32=PAGES,Normal=PAGES[,HighMem=PAGES]\n" +
        "              --cpus N  --min-free-kbytes N  --vmalloc SIZE  --no-memfd";

    public static MachineConfig Parse(CliArgs args, MachineConfig? defaults = null)
    {
        var cfg = defaults ?? MachineConfig.Default;
        if (args.Get("profile") is { } p)
        {
            try { cfg = cfg with { Profile = ArchProfile.Parse(p) }; }
            catch (ArgumentException e) { throw new CliException(e.Message); }
        }
        if (args.Get("ram") is { } ram) cfg = cfg with { RamBytes = CliArgs.ParseSize(ram, "--ram") };
        if (args.Get("zones") is { } zones) cfg = cfg with { ZoneManagedPages = ParseZones(zones) };
        if (args.Has("cpus"))
        {
            int cpus = args.GetInt("cpus", 2);
            if (cpus is < 1 or > 255) throw new CliException($"--cpus: {cpus} is out of range (1..255)");
            cfg = cfg with { Cpus = cpus };
        }
        if (args.Has("min-free-kbytes"))
        {
            int k = args.GetInt("min-free-kbytes", 0);
            if (k < 1) throw new CliException("--min-free-kbytes must be positive");
            cfg = cfg with { MinFreeKbytes = k };
        }
        if (args.Get("vmalloc") is { } vm) cfg = cfg with { VmallocBytes = (ulong)CliArgs.ParseSize(vm, "--vmalloc") };
        if (args.Has("no-memfd")) cfg = cfg with { ForceNoMemfd = true };
        return cfg;
    }

    public static Dictionary<ZoneType, long> ParseZones(string text)
    {
        var d = new Dictionary<ZoneType, long>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0) throw new CliException($"--zones: '{part}' is not ZONE=PAGES");
            ZoneType z;
            try { z = ZoneNames.Parse(part[..eq]); }
            catch (ArgumentException e) { throw new CliException("--zones: " + e.Message); }
            if (!long.TryParse(part[(eq + 1)..], out long pages) || pages < 0)
                throw new CliException($"--zones: '{part[(eq + 1)..]}' is not a page count");
            d[z] = pages;
        }
        if (d.Count == 0) throw new CliException("--zones: no zones given");
        return d;
    }

    /// <summary>Boot, turning configuration errors into one-line usage errors.</summary>
    public static Machine Boot(MachineConfig cfg)
    {
        try { return Machine.Boot(cfg); }
        catch (ArgumentException e) { throw new CliException(e.Message); }
    }
}
