namespace Kmem;

/// <summary>
/// Base of every error kmem raises for a condition Linux would report in the kernel log (a BUG, a WARN, an
/// allocation-failure splat). <see cref="Exception.Message"/> is one line for humans and test assertions;
/// <see cref="Report"/> holds the multi-line text in the shape Linux prints, so a tool or test can compare it
/// with a real dmesg without parsing the message.
/// </summary>
public class KmemException : Exception
{
    /// <summary>An error whose report is <paramref name="message"/>; the one-line message is its first line.</summary>
    public KmemException(string message)
        : this(FirstLine(message), message)
    {
    }

    private static string FirstLine(string s)
    {
        int nl = s.IndexOf('\n');
        return nl < 0 ? s : s[..nl];
    }

    /// <summary>An error with a one-line <paramref name="message"/> and a Linux-style <paramref name="report"/>.</summary>
    public KmemException(string message, string report)
        : base(message)
    {
        Report = report;
    }

    /// <summary>As <see cref="KmemException(string, string)"/>, wrapping the exception that caused it.</summary>
    public KmemException(string message, string report, Exception? innerException)
        : base(message, innerException)
    {
        Report = report;
    }

    /// <summary>The text Linux would have logged for this condition (for example a VM_BUG_ON or warn_alloc report).</summary>
    public string Report { get; }
}
