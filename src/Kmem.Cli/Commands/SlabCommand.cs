using Kmem.Slab;

namespace Kmem.Cli.Commands;

/// <summary>
/// <c>kmem slab geometry --size BYTES[,BYTES…] [--align BYTES] [--flags hwcache_align,…] [--cpus N] [--ctor]</c>: the
/// slab layout SLUB would choose, one line per size. <c>kmem slab aliases</c>: caches merged at boot (none: kmalloc
/// caches never merge) — mainly a place for tools to list <see cref="SlabAllocator.AliasInfo"/>.
/// </summary>
public static class SlabCommand
{
    private const string Usage =
        "usage: kmem slab geometry --size BYTES[,BYTES...] [--align BYTES] [--flags hwcache_align,reclaim_account,...] [--cpus N] [--ctor]\n" +
        "       kmem slab info [boot options]      (slabinfo of a freshly booted machine)";

    public static int Run(CliArgs args, TextWriter stdout)
    {
        if (args.Has("help") || args.Positional.Count != 1)
        {
            stdout.WriteLine(Usage);
            return args.Has("help") ? 0 : 2;
        }
        switch (args.Positional[0])
        {
            case "geometry": return Geometry(args, stdout);
            case "info":
            {
                var cfg = BootOptions.Parse(args);
                args.RejectUnknown();
                using var m = BootOptions.Boot(cfg);
                stdout.Write(m.Slab.SlabInfo());
                return 0;
            }
            default: throw new CliException($"unknown slab command '{args.Positional[0]}' (try: geometry, info)");
        }
    }

    private static int Geometry(CliArgs args, TextWriter stdout)
    {
        string sizes = args.Require("size");
        int align = args.GetInt("align", 0);
        int cpus = args.GetInt("cpus", 2);
        bool ctor = args.Has("ctor");
        SlabFlags flags = 0;
        if (args.Get("flags") is { } f)
        {
            try { flags = SlabFlagNames.Parse(f); }
            catch (ArgumentException e) { throw new CliException("--flags: " + e.Message); }
        }
        args.RejectUnknown();
        if (cpus is < 1 or > 255) throw new CliException($"--cpus: {cpus} is out of range (1..255)");
        if (align < 0 || (align & (align - 1)) != 0) throw new CliException($"--align: {align} is not a power of two");
        foreach (var part in sizes.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            long size = CliArgs.ParseSize(part, "--size");
            var g = size > SlabAllocator.KmallocMaxSize ? null : SlabGeometry.Compute((int)size, align, flags, ctor, cpus);
            if (g is not { } geo)
            {
                stdout.WriteLine($"size={size} does not fit a slab (KMALLOC_MAX_SIZE is {SlabAllocator.KmallocMaxSize})");
                continue;
            }
            stdout.WriteLine($"size={size} order={geo.Order} objperslab={geo.Objects} pagesperslab={1 << geo.Order} slot={geo.Size} waste={geo.Waste} " +
                             $"align={geo.Align} offset={geo.Offset} min_partial={geo.MinPartial} cpu_partial={geo.CpuPartial}");
        }
        return 0;
    }
}
