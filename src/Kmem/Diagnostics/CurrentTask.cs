namespace Kmem.Diagnostics;

/// <summary>
/// Linux's <c>current</c>, as far as reports need it: a command name and a pid for the calling thread.
/// A thread may name itself (a scenario's "kswapd0", "bash") with <see cref="Set"/>; otherwise the thread's name or "kmem".
/// </summary>
public static class CurrentTask
{
    [ThreadStatic] private static string? t_comm;
    [ThreadStatic] private static int t_pid;

    public static string Comm => t_comm ?? Thread.CurrentThread.Name ?? "kmem";
    public static int Pid => t_pid != 0 ? t_pid : Environment.ProcessId + Environment.CurrentManagedThreadId;

    public static void Set(string comm, int pid)
    {
        t_comm = comm;
        t_pid = pid;
    }

    public static void Clear()
    {
        t_comm = null;
        t_pid = 0;
    }
}
