namespace Kmem.Tracing;

/// <summary>A trace line (or file) that is not valid ftrace text for the event it names. Thrown in strict mode.</summary>
public sealed class TraceFormatException : KmemException
{
    /// <summary>Creates the exception for <paramref name="file"/>:<paramref name="line"/>.</summary>
    public TraceFormatException(string file, long line, string reason, string? text = null)
        : base(Describe(file, line, reason, text), Describe(file, line, reason, text))
    {
        File = file;
        LineNumber = line;
        Reason = reason;
        Text = text;
    }

    private static string Describe(string file, long line, string reason, string? text) =>
        text is null ? $"{file}:{line}: {reason}" : $"{file}:{line}: {reason}: \"{text}\"";

    /// <summary>The trace's file name (or the name given for a stream).</summary>
    public string File { get; }

    /// <summary>1-based line number; 0 for a problem with the file as a whole.</summary>
    public long LineNumber { get; }

    /// <summary>What was wrong, without the location.</summary>
    public string Reason { get; }

    /// <summary>The offending line, non-printable bytes replaced and cut to a readable length; null if none.</summary>
    public string? Text { get; }
}
