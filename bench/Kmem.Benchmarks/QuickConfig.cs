using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace Kmem.Benchmarks;

/// <summary>
/// Short in-process runs: 1 launch, 3 warm-up and 7 measured iterations of ~100 ms each, so a case costs a couple
/// of seconds. In-process avoids building a separate host project per run; the numbers are a little noisier than
/// BenchmarkDotNet's default job, which is the price of running on a shared machine. Ratio columns compare each
/// method with the class's baseline; the memory diagnoser shows that kmem's paths allocate nothing managed.
/// </summary>
public sealed class QuickConfig : ManualConfig
{
    public QuickConfig()
    {
        AddJob(Job.ShortRun
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithLaunchCount(1)
            .WithWarmupCount(3)
            .WithIterationCount(7)
            .WithIterationTime(Perfolizer.Horology.TimeInterval.FromMilliseconds(100))
            .WithId("Quick"));
        AddDiagnoser(MemoryDiagnoser.Default);
        AddColumn(StatisticColumn.Median, StatisticColumn.Min);
        WithOptions(ConfigOptions.DisableOptimizationsValidator);
    }
}
