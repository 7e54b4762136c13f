using System.Text;
using Kmem.Diagnostics;
using Kmem.Mm;

namespace Kmem.Reclaim;

public sealed partial class Reclaimer
{
    /// <summary>OOM_SCORE_ADJ_MIN: a process with this adjustment is never chosen.</summary>
    public const int OomScoreAdjMin = -1000;
    /// <summary>OOM_SCORE_ADJ_MAX.</summary>
    public const int OomScoreAdjMax = 1000;

    /// <summary>totalpages for oom_badness: RAM plus swap.</summary>
    public long OomTotalPages => _m.TotalRamPages + (Swap != null ? Swap.TotalPages - 1 : 0);

    /// <summary>
    /// oom_badness: rss + swap entries + page-table pages, plus oom_score_adj * totalpages / 1000;
    /// long.MinValue for an unkillable (OOM_SCORE_ADJ_MIN) or already dead process.
    /// </summary>
    public long OomBadness(Process p)
    {
        if (p.OomScoreAdj == OomScoreAdjMin || p.IsKilled) return long.MinValue;
        long points = p.RssPages + p.SwapPages + p.PageTablePages;
        points += (long)p.OomScoreAdj * OomTotalPages / 1000;
        return points;
    }

    /// <summary>out_of_memory: select the worst process, report, kill it and reap its memory. False when nobody is killable.</summary>
    public bool OutOfMemory(Gfp gfp, int order)
    {
        Process? victim = null;
        long best = long.MinValue;
        foreach (var p in Processes)
        {
            long b = OomBadness(p);
            if (b == long.MinValue) continue;
            // oom_evaluate_task: the highest score wins; ties go to the later task in the list.
            if (victim == null || b >= best)
            {
                victim = p;
                best = b;
            }
        }
        _log.Write(LogLevel.Warning, DumpHeader(gfp, order, victim));
        if (victim == null) return false;
        KillProcess(victim, "Out of memory");
        return true;
    }

    /// <summary>oom_kill_process + __oom_kill_process + the oom_reaper's work, done at once.</summary>
    public void KillProcess(Process victim, string reason = "Out of memory")
    {
        var s = victim.Snapshot();
        _log.Write(LogLevel.Err,
            $"{reason}: Killed process {victim.Pid} ({victim.Comm}) total-vm:{s.TotalVmPages * 4}kB, anon-rss:{s.RssAnon * 4}kB, " +
            $"file-rss:{s.RssFile * 4}kB, shmem-rss:0kB, UID:{victim.Uid} pgtables:{s.PageTablePages * 4}kB oom_score_adj:{victim.OomScoreAdj}");
        _stat.Inc(VmItem.OomKill);
        if (Tracing.Emit.Tracepoints.MarkVictimOn) Tracing.Emit.Tracepoints.MarkVictim(victim.Pid);
        victim.Kill();
        _log.Write(LogLevel.Info, $"oom_reaper: reaped process {victim.Pid} ({victim.Comm}), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB");
    }

    /// <summary>dump_header: who invoked the OOM killer, Mem-Info, the task list and the oom-kill constraint line.</summary>
    private string DumpHeader(Gfp gfp, int order, Process? victim)
    {
        var sb = new StringBuilder();
        sb.Append($"{CurrentTask.Comm} invoked oom-killer: gfp_mask=0x{(uint)gfp:x}({GfpFormat.Format(gfp)}), order={order}, oom_score_adj=0\n");
        sb.Append(_pa.ShowFreeAreas()).Append('\n');
        sb.Append($"{_m.Stat[VmItem.NrFilePages]} total pagecache pages\n");
        if (Swap != null) sb.Append($"Free swap  = {Swap.FreePages * 4}kB\nTotal swap = {(Swap.TotalPages - 1) * 4}kB\n");
        sb.Append($"{_m.TotalRamPages} pages RAM\n");
        sb.Append("Tasks state (memory values in pages):\n");
        sb.Append("[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name\n");
        foreach (var p in Processes)
        {
            if (p.IsKilled) continue;
            var s = p.Snapshot();
            sb.Append($"[{p.Pid,7}] {p.Uid,5} {p.Pid,5} {s.TotalVmPages,8} {s.RssAnon + s.RssFile,8} {s.RssAnon,8} {s.RssFile,8} {0,9} {s.PageTablePages * 4096,14} {s.SwapPages,8} {p.OomScoreAdj,13} {p.Comm}\n");
        }
        if (victim != null)
            sb.Append($"oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/,task={victim.Comm},pid={victim.Pid},uid={victim.Uid}");
        return sb.ToString().TrimEnd('\n');
    }
}
