namespace Kmem.Replay;

/// <summary>How a replay runs.</summary>
public sealed record ReplayOptions
{
    /// <summary>Which events take part (default: <see cref="ReplayMode.Objects"/>).</summary>
    public ReplayMode Mode { get; init; } = ReplayMode.Objects;

    /// <summary>Stop after this many events (0: the whole trace). For prefixes in tests and quick looks.</summary>
    public long MaxEvents { get; init; }

    /// <summary>
    /// Initial capacity of the pointer tables. 1 &lt;&lt; 16: the real traces peak at ~20,000 live objects and ~60,000 live
    /// page blocks, so the tables rarely grow during a replay (a guess sized from ../shared/traces, not a limit).
    /// </summary>
    public int InitialTableCapacity { get; init; } = 1 << 16;

    /// <summary>
    /// Parse the trace on a background thread, one batch ahead of the replay (on machines with more than one core).
    /// The reader must not be used by anyone else during <see cref="ReplayEngine.Run"/>.
    /// </summary>
    public bool ParseAhead { get; init; } = true;

    /// <summary>Rows in the top-N tables of the report.</summary>
    public int Top { get; init; } = 10;
}
