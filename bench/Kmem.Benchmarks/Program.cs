using BenchmarkDotNet.Running;

// dotnet run -c Release --project bench/Kmem.Benchmarks -- --filter '*'          (every class)
// dotnet run -c Release --project bench/Kmem.Benchmarks -- --filter '*PageAlloc*'
// Jobs are short and in-process (QuickConfig): a few seconds per case, so a 2-core machine shared with others copes.
BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
