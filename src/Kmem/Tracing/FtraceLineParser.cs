using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Kmem.Tracing;

/// <summary>What one trace line turned out to be.</summary>
internal enum LineKind : byte
{
    /// <summary>A kmem-related event; the <see cref="TraceEvent"/> is filled in.</summary>
    Event,
    /// <summary>A comment (<c>#</c>) or blank line.</summary>
    Comment,
    /// <summary>A well-formed ftrace line of an event kmem does not read.</summary>
    Unrelated,
    /// <summary>trace_pipe's <c>CPU:N [LOST M EVENTS]</c> notice.</summary>
    Lost,
    /// <summary>Not valid: <see cref="FtraceLineParser.Error"/> says why.</summary>
    Malformed,
}

/// <summary>
/// Parses one line of ftrace text output from bytes:
/// <code>
///   &lt;comm&gt;-&lt;pid&gt; [(&lt;tgid&gt;)] [&lt;cpu&gt;] [&lt;flags&gt;] &lt;secs&gt;.&lt;usecs&gt;: &lt;event&gt;: &lt;key&gt;=&lt;value&gt; ...
/// </code>
/// The comm may contain spaces and dashes, so the header is anchored on the <c>[cpu]</c> column and the pid is
/// the digits after the last dash before it. Fields are <c>key=value</c> tokens (also <c>key: value</c>, as in
/// alloc_vmap_area's <c>va_start: N</c>); their order is not relied on, unknown keys are ignored, and each kind
/// has a set of required keys. Numbers are parsed by hand; texts go through the <see cref="TraceStringTable"/>.
/// Two shortcuts in front of that general code, each giving exactly what it gives (tested on every line of the real
/// traces): a line that starts with the previous line's header bytes reuses their decoding, and the slab and page
/// events are read by straight-line code for Linux 6.18's exact field layout before the general loop is tried.
/// Not thread-safe (one parser per reader).
/// </summary>
internal sealed class FtraceLineParser
{
    private readonly TraceStringTable _strings;

    // Decoded Gfp per gfp text id (texts repeat: a few dozen distinct values per trace).
    private Gfp[] _gfpById = new Gfp[64];
    private byte[] _gfpState = new byte[64]; // 0 = not decoded yet, 1 = valid, 2 = invalid

    // The previous line's comm: consecutive lines are mostly from the same task.
    private readonly byte[] _lastComm = new byte[64];
    private int _lastCommLength = -1;
    private int _lastCommId;

    // The previous line's header ("comm-pid [cpu] flags ", ~37 bytes with Linux's padding) and what it decoded to.
    // ~80-90% of lines in a real trace repeat the previous line's task, CPU and flags, so a compare of these bytes
    // replaces the header's token scans, pid digits, comm interning and flags decoding. 0 = nothing remembered.
    private const int MaxHeader = 64;
    private readonly byte[] _header = new byte[MaxHeader];
    private int _headerLength;
    private (int Cpu, int Pid, int CommId, TraceContextFlags Context, byte Preempt, byte Migrate) _headerFields;

    public FtraceLineParser(TraceStringTable strings) => _strings = strings;

    /// <summary>Why the last <see cref="LineKind.Malformed"/> line was rejected.</summary>
    public string Error { get; private set; } = "";

    /// <summary>Events reported lost by the last <see cref="LineKind.Lost"/> line.</summary>
    public long LostCount { get; private set; }

    /// <summary>Parses <paramref name="line"/> (without its newline) into <paramref name="ev"/>.</summary>
    public LineKind Parse(ReadOnlySpan<byte> line, out TraceEvent ev)
    {
        ev = default;
        if (!line.IsEmpty && line[^1] == (byte)'\r')
            line = line[..^1];
        if (SameHeaderAsLast(line))
        {
            (ev.Cpu, ev.Pid, ev.CommId, ev.Context, ev.PreemptDepth, ev.MigrateDisableDepth) = _headerFields;
            return ParseAfterHeader(line, _headerLength, ref ev);
        }
        _headerLength = 0;
        int i = SkipSpacesVector(line, 0);
        if (i == line.Length || line[i] == (byte)'#')
            return LineKind.Comment;

        // --- "comm-pid [cpu]": anchor on " [digits]".
        int bracket = FindCpuColumn(line, i, out int cpu, out int pos);
        if (bracket < 0)
            return IsLostNotice(line[i..]) ? LineKind.Lost : Fail(Errors.NoCpuColumn);
        ev.Cpu = cpu;
        ReadOnlySpan<byte> commPid = line[i..TrimSpacesBefore(line, bracket)];
        if (!commPid.IsEmpty && commPid[^1] == (byte)')') // "(  tgid)" column of the record-tgid option
        {
            int open = commPid.LastIndexOf((byte)'(');
            if (open < 0)
                return Fail(Errors.BadTaskPid);
            commPid = commPid[..open].TrimEnd((byte)' ');
        }
        // The pid is the digits after the last dash: read backwards, they end at that dash (else the general way).
        int dash = commPid.Length;
        long pid = 0;
        while (dash > 0 && commPid.Length - dash < 10 && (uint)(commPid[dash - 1] - '0') <= 9)
            dash--;
        if (dash > 0 && dash < commPid.Length && commPid[dash - 1] == (byte)'-')
        {
            for (int k = dash; k < commPid.Length; k++)
                pid = pid * 10 + (commPid[k] - '0');
            dash--;
        }
        else
        {
            dash = commPid.LastIndexOf((byte)'-');
            if (dash < 0 || !TryParseInt(commPid[(dash + 1)..], out pid))
                return Fail(Errors.BadTaskPid);
        }
        if (pid < 0 || pid > int.MaxValue)
            return Fail(Errors.BadTaskPid);
        ev.Pid = (int)pid;
        ev.CommId = InternComm(commPid[..dash]);

        // --- Flags column (absent without the irq-info option), then "secs.usecs:".
        pos = SkipSpacesVector(line, pos);
        int flagsStart = pos;
        ReadOnlySpan<byte> token = NextTokenVector(line, ref pos);
        if (token.IsEmpty || token[^1] != (byte)':')
        {
            if (!TryDecodeFlags(token, ref ev))
                return Fail(Errors.BadFlags);
            // The flags token ends at a space (a flags column is never the last thing on a line): the header up to
            // and including it decides everything above, so the next line with the same bytes there can skip it.
            if (flagsStart + token.Length < line.Length)
                RememberHeader(line[..pos], in ev);
            return ParseAfterHeader(line, pos, ref ev);
        }
        return ParseTimestampAndEvent(line, pos, token, ref ev);
    }

    // The rest of a line after the flags column: "secs.usecs: event: fields".
    private LineKind ParseAfterHeader(ReadOnlySpan<byte> line, int pos, ref TraceEvent ev)
    {
        pos = SkipSpacesVector(line, pos);
        ReadOnlySpan<byte> token = NextTokenVector(line, ref pos);
        return ParseTimestampAndEvent(line, pos, token, ref ev);
    }

    // token is the timestamp column ("secs.usecs:"); pos is just after it.
    private LineKind ParseTimestampAndEvent(ReadOnlySpan<byte> line, int pos, ReadOnlySpan<byte> token, ref TraceEvent ev)
    {
        if (token.IsEmpty || token[^1] != (byte)':' || !TryParseTimestamp(token[..^1], out long us))
            return Fail(Errors.BadTimestamp);
        ev.TimestampUs = us;

        // --- "event:" then the fields.
        pos = SkipSpacesVector(line, pos);
        token = NextTokenVector(line, ref pos);
        if (token.Length < 2 || token[^1] != (byte)':')
            return Fail(Errors.NoEventName);
        EventKind kind = ClassifyEvent(token[..^1]);
        if (kind == EventKind.None)
            return LineKind.Unrelated;
        ev.Kind = kind;
        return ParseFields(line, pos, ref ev);
    }

    private LineKind ParseFields(ReadOnlySpan<byte> line, int fieldsStart, ref TraceEvent ev)
    {
        ReadOnlySpan<byte> fields = line[fieldsStart..];
        if (FieldFastPath && ev.Kind switch
            {
                EventKind.KmemCacheAlloc or EventKind.KmemCacheFree or EventKind.Kmalloc or EventKind.Kfree => TrySlabFields(fields, ref ev),
                EventKind.MmPageAlloc or EventKind.MmPageFree or EventKind.MmPageFreeBatched => TryPageFields(fields, ref ev),
                _ => false,
            })
        {
            return LineKind.Event;
        }
        ulong seen = 0;
        int pos = 0;

        // Fast path: the fields in the order Linux 6.18 prints them. Stops at the first difference (another
        // kernel version, a missing or extra field) and lets the general loop below take over from there.
        FieldSpec[]? layout = Layouts[(int)ev.Kind];
        if (layout is not null)
        {
            for (int f = 0; f < layout.Length; f++)
            {
                ref readonly FieldSpec spec = ref layout[f];
                if (!spec.IsPrefixOf(fields, pos))
                    break;
                int start = pos + spec.Key.Length;
                int end = NextSpace(line, fieldsStart + start) - fieldsStart;
                if (!SetField(ref ev, spec.Id, fields[start..end]))
                    return Fail(Errors.BadValue[(int)spec.Id]);
                seen |= 1UL << (int)spec.Id;
                pos = end < fields.Length ? end + 1 : end;
            }
        }

        while (true)
        {
            pos = SkipSpaces(fields, pos);
            if (pos >= fields.Length)
                break;
            ReadOnlySpan<byte> token = NextToken(fields, ref pos, out int eq);
            ReadOnlySpan<byte> key, value;
            if (eq > 0)
            {
                key = token[..eq];
                value = token[(eq + 1)..];
            }
            else if (token.Length > 1 && token[^1] == (byte)':') // "va_start: 123"
            {
                key = token[..^1];
                pos = SkipSpaces(fields, pos);
                value = NextToken(fields, ref pos);
            }
            else
            {
                int colon = token.IndexOf((byte)':'); // mark_victim's "file-rss:123kB"
                if (colon > 0)
                {
                    key = token[..colon];
                    value = token[(colon + 1)..];
                }
                else if (ev.Kind == EventKind.MarkVictim)
                {
                    continue; // the rest of a comm with spaces
                }
                else
                {
                    return Fail(Errors.NotKeyValue);
                }
            }
            FieldId field = ClassifyField(key);
            if (field == FieldId.Unknown)
                continue;
            if (!SetField(ref ev, field, value))
                return Fail(Errors.BadValue[(int)field]);
            seen |= 1UL << (int)field;
        }
        ulong required = Required(ev.Kind);
        if ((seen & required) != required)
        {
            ulong missing = required & ~seen;
            return Fail(Errors.Missing[System.Numerics.BitOperations.TrailingZeroCount(missing)]);
        }
        return LineKind.Event;
    }

    // ------------------------------------------------------------------ exact-layout fast paths

    /// <summary>Whether the exact-layout field parsers run first (see <see cref="FtraceReaderOptions.FieldFastPath"/>).</summary>
    internal bool FieldFastPath { get; init; } = true;

    // The slab and page events make up ~99% of a kmem trace. For them, straight-line code reads the fields exactly as
    // Linux 6.18 prints them (include/trace/events/kmem.h): each key at its place, one space between fields, values
    // in their canonical form (16 hex digits for %p, plain decimal, node=-1), nothing after the last field. Anything
    // else (another kernel version, extra spaces, a sign, a malformed value) makes it return false before it has
    // rejected anything, and the general loop parses the line from the start; so a line either gets the same event
    // from both or is the general loop's alone, which the tests check on every line of the real traces.

    // call_site=%pS ptr=%p [name=%s] [bytes_req=%zu bytes_alloc=%zu gfp_flags=%s node=%d accounted=%s]
    private bool TrySlabFields(ReadOnlySpan<byte> f, ref TraceEvent ev)
    {
        if (!f.StartsWith("call_site="u8))
            return false;
        int end = NextSpace(f, 10);
        if (end == 10 || end >= f.Length)
            return false;
        ev.CallSiteId = _strings.Intern(f[10..end]);
        int pos = end + 1;
        if (!f[pos..].StartsWith("ptr="u8) || !TryHex16Before(f, pos + 4, out ulong ptr))
            return false;
        ev.Ptr = ptr;
        pos += 4 + 16;
        EventKind kind = ev.Kind;
        if (kind == EventKind.Kfree)
            return pos == f.Length;
        if (pos >= f.Length)
            return false;
        pos++;
        if (kind != EventKind.Kmalloc)
        {
            if (!f[pos..].StartsWith("name="u8))
                return false;
            pos += 5;
            end = NextSpace(f, pos);
            if (end == pos)
                return false;
            ev.CacheNameId = _strings.Intern(f[pos..end]);
            if (kind == EventKind.KmemCacheFree)
                return end == f.Length;
            if (end >= f.Length)
                return false;
            pos = end + 1;
        }
        if (!f[pos..].StartsWith("bytes_req="u8) || !TryDecimalBefore(f, ref pos, 10, out long req))
            return false;
        if (!f[pos..].StartsWith("bytes_alloc="u8) || !TryDecimalBefore(f, ref pos, 12, out long alloc))
            return false;
        ev.BytesReq = req;
        ev.BytesAlloc = alloc;
        if (!f[pos..].StartsWith("gfp_flags="u8))
            return false;
        pos += 10;
        end = NextSpace(f, pos);
        if (end == pos || end >= f.Length || !SetGfp(ref ev, f[pos..end]))
            return false;
        pos = end + 1;
        if (!f[pos..].StartsWith("node="u8))
            return false;
        pos += 5;
        if (f[pos..].StartsWith("-1 "u8))
        {
            ev.Node = -1;
            pos += 3;
        }
        else
        {
            if (!TryDecimalBefore(f, ref pos, 0, out long node) || node > 9999)
                return false;
            ev.Node = (int)node;
        }
        ReadOnlySpan<byte> accounted = f[pos..];
        if (accounted.SequenceEqual("accounted=false"u8))
            return true;
        if (!accounted.SequenceEqual("accounted=true"u8))
            return false;
        ev.Accounted = true;
        return true;
    }

    // page=%p pfn=0x%lx order=%d [migratetype=%d gfp_flags=%s]
    private bool TryPageFields(ReadOnlySpan<byte> f, ref TraceEvent ev)
    {
        if (!f.StartsWith("page="u8) || !TryHex16Before(f, 5, out ulong page))
            return false;
        int pos = 5 + 16;
        if (pos >= f.Length || !f[(pos + 1)..].StartsWith("pfn=0x"u8))
            return false;
        pos += 7;
        int end = NextSpace(f, pos);
        if (end >= f.Length || !TryParseHexDigits(f[pos..end], out ulong pfn) || !f[(end + 1)..].StartsWith("order="u8))
            return false;
        pos = end + 7;
        // order: one or two digits, then the end (frees) or " migratetype=" (allocations).
        if (pos >= f.Length || (uint)(f[pos] - '0') > 9)
            return false;
        int order = f[pos++] - '0';
        if (pos < f.Length && (uint)(f[pos] - '0') <= 9)
            order = order * 10 + (f[pos++] - '0');
        ev.Ptr = page;
        ev.Pfn = pfn;
        ev.Order = order;
        if (ev.Kind != EventKind.MmPageAlloc)
            return pos == f.Length;
        if (!f[pos..].StartsWith(" migratetype="u8))
            return false;
        pos += 13;
        if (pos >= f.Length || (uint)(f[pos] - '0') > 9 || pos + 1 >= f.Length || f[pos + 1] != (byte)' ')
            return false; // migratetype is one digit (MIGRATE_TYPES < 10)
        ev.MigrateType = f[pos] - '0';
        pos += 2;
        if (!f[pos..].StartsWith("gfp_flags="u8))
            return false;
        pos += 10;
        end = NextSpace(f, pos);
        return end == f.Length && end > pos && SetGfp(ref ev, f[pos..]);
    }

    // Exactly 16 hex digits at pos, followed by a space or the end of f.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryHex16Before(ReadOnlySpan<byte> f, int pos, out ulong value)
    {
        value = 0;
        return (uint)pos <= (uint)f.Length && f.Length - pos >= 16 && (f.Length - pos == 16 || f[pos + 16] == (byte)' ')
            && TryParseHexDigits(f.Slice(pos, 16), out value);
    }

    // A key of keyLength bytes at pos (already matched), then 1-18 decimal digits and a space; pos moves past it.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryDecimalBefore(ReadOnlySpan<byte> f, ref int pos, int keyLength, out long value)
    {
        int i = pos + keyLength;
        int start = i;
        long v = 0;
        while ((uint)i < (uint)f.Length && (uint)(f[i] - '0') <= 9 && i - start < 18)
            v = v * 10 + (f[i++] - '0');
        value = v;
        if (i == start || (uint)i >= (uint)f.Length || f[i] != (byte)' ')
            return false;
        pos = i + 1;
        return true;
    }

    private bool SetField(ref TraceEvent ev, FieldId field, ReadOnlySpan<byte> v)
    {
        ulong u;
        long s;
        switch (field)
        {
            case FieldId.CallSite:
                if (v.IsEmpty) return false;
                ev.CallSiteId = _strings.Intern(v);
                return true;
            case FieldId.Name:
                if (v.IsEmpty) return false;
                ev.CacheNameId = _strings.Intern(v);
                return true;
            case FieldId.Ptr:
            case FieldId.Page:
                if (!TryParsePointer(v, out u)) return false;
                ev.Ptr = u;
                return true;
            case FieldId.BytesReq:
                if (!TryParseInt(v, out s) || s < 0) return false;
                ev.BytesReq = s;
                return true;
            case FieldId.BytesAlloc:
                if (!TryParseInt(v, out s) || s < 0) return false;
                ev.BytesAlloc = s;
                return true;
            case FieldId.GfpFlags:
                return SetGfp(ref ev, v);
            case FieldId.Node:
            case FieldId.Nid:
                if (!TryParseInt32(v, out int node)) return false;
                ev.Node = node;
                return true;
            case FieldId.Accounted:
                if (v.SequenceEqual("true"u8)) ev.Accounted = true;
                else if (!v.SequenceEqual("false"u8)) return false;
                return true;
            case FieldId.Pfn:
                if (!TryParseNumber(v, out u)) return false;
                ev.Pfn = u;
                return true;
            case FieldId.Order:
            case FieldId.AllocOrder:
                if (!TryParseInt32(v, out int order) || order < 0) return false;
                ev.Order = order;
                return true;
            case FieldId.MigrateType:
            case FieldId.AllocMigrateType:
                if (!TryParseInt32(v, out int mt)) return false;
                ev.MigrateType = mt;
                return true;
            case FieldId.FallbackOrder:
                if (!TryParseInt32(v, out int fo)) return false;
                ev.FallbackOrder = fo;
                return true;
            case FieldId.FallbackMigrateType:
                if (!TryParseInt32(v, out int fmt)) return false;
                ev.FallbackMigrateType = fmt;
                return true;
            case FieldId.PercpuRefill:
                if (!TryParseInt32(v, out int refill)) return false;
                ev.PercpuRefill = refill != 0;
                return true;
            case FieldId.VaStart:
                if (!TryParseNumber(v, out u)) return false;
                ev.VaStart = u;
                return true;
            case FieldId.Size:
                if (!TryParseNumber(v, out u)) return false;
                ev.Size = u;
                return true;
            case FieldId.Align:
                if (!TryParseNumber(v, out u)) return false;
                ev.Align = u;
                return true;
            case FieldId.VStart:
            case FieldId.Start:
                if (!TryParseNumber(v, out u)) return false;
                ev.VStart = u;
                return true;
            case FieldId.VEnd:
            case FieldId.End:
                if (!TryParseNumber(v, out u)) return false;
                ev.VEnd = u;
                return true;
            case FieldId.Failed:
                if (!TryParseInt32(v, out int failed)) return false;
                ev.Failed = failed != 0;
                return true;
            case FieldId.NrLazy:
                if (!TryParseNumber(v, out u)) return false;
                ev.NrLazy = u;
                return true;
            case FieldId.NrLazyMax:
                if (!TryParseNumber(v, out u)) return false;
                ev.NrLazyMax = u;
                return true;
            case FieldId.NumPurged:
                if (!TryParseNumber(v, out u) || u > uint.MaxValue) return false;
                ev.NrPurged = (uint)u;
                return true;
            case FieldId.NrReclaimed:
                if (!TryParseNumber(v, out u)) return false;
                ev.NrReclaimed = u;
                return true;
            case FieldId.Pid:
                if (!TryParseInt32(v, out int victim)) return false;
                ev.VictimPid = victim;
                return true;
            default: // fields read only for validation (cold, pageblock_order, fragmenting, change_ownership)
                return TryParseInt(v, out _);
        }
    }

    private bool SetGfp(ref TraceEvent ev, ReadOnlySpan<byte> v)
    {
        if (v.IsEmpty)
            return false;
        int id = _strings.Intern(v);
        if (id >= _gfpState.Length)
        {
            int size = Math.Max(id + 1, _gfpState.Length * 2);
            Array.Resize(ref _gfpById, size);
            Array.Resize(ref _gfpState, size);
        }
        if (_gfpState[id] == 0)
        {
            bool ok = GfpText.TryParse(_strings[id], out Gfp gfp);
            _gfpById[id] = gfp;
            _gfpState[id] = ok ? (byte)1 : (byte)2;
        }
        ev.GfpTextId = id;
        ev.Gfp = _gfpById[id];
        return _gfpState[id] == 1;
    }

    private int InternComm(ReadOnlySpan<byte> comm)
    {
        if (comm.Length == _lastCommLength && comm.SequenceEqual(_lastComm.AsSpan(0, comm.Length)))
            return _lastCommId;
        int id = _strings.Intern(comm);
        if (comm.Length <= _lastComm.Length)
        {
            comm.CopyTo(_lastComm);
            _lastCommLength = comm.Length;
            _lastCommId = id;
        }
        return id;
    }

    /// <summary>Whether lines may reuse the previous line's decoded header (see <see cref="FtraceReaderOptions.HeaderCache"/>).</summary>
    internal bool RememberHeaders { get; init; } = true;

    private void RememberHeader(ReadOnlySpan<byte> header, in TraceEvent ev)
    {
        if (!RememberHeaders || header.Length is < 32 or > MaxHeader)
            return; // outside what SameHeaderAsLast compares in two vector loads
        header.CopyTo(_header);
        _headerLength = header.Length;
        _headerFields = (ev.Cpu, ev.Pid, ev.CommId, ev.Context, ev.PreemptDepth, ev.MigrateDisableDepth);
    }

    // line starts with the remembered header (32-64 bytes: the first and the last 32 of them, overlapping).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool SameHeaderAsLast(ReadOnlySpan<byte> line)
    {
        int h = _headerLength;
        if (h == 0 || line.Length <= h)
            return false;
        if (Vector256.IsHardwareAccelerated)
        {
            ref byte l = ref MemoryMarshal.GetReference(line);
            ref byte r = ref MemoryMarshal.GetArrayDataReference(_header);
            return Vector256.LoadUnsafe(ref l) == Vector256.LoadUnsafe(ref r)
                && Vector256.LoadUnsafe(ref l, (nuint)(h - 32)) == Vector256.LoadUnsafe(ref r, (nuint)(h - 32));
        }
        return line[..h].SequenceEqual(_header.AsSpan(0, h));
    }

    private LineKind Fail(string reason)
    {
        Error = reason;
        return LineKind.Malformed;
    }

    private bool IsLostNotice(ReadOnlySpan<byte> s)
    {
        // kernel/trace/trace.c print_trace_line(): "CPU:%d [LOST %lu EVENTS]\n"
        if (!s.StartsWith("CPU:"u8))
            return false;
        int open = s.IndexOf("[LOST "u8);
        if (open < 0)
            return false;
        ReadOnlySpan<byte> rest = s[(open + 6)..];
        int sp = rest.IndexOf((byte)' ');
        if (sp < 0 || !rest[sp..].StartsWith(" EVENTS]"u8) || !TryParseInt(rest[..sp], out long lost))
            return false;
        LostCount = lost;
        return true;
    }

    // ------------------------------------------------------------------ header pieces

    // "digits]" at start (at most 6 digits): the cpu number and the index after ']'.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryCpuDigits(ReadOnlySpan<byte> line, int start, out int cpu, out int after)
    {
        int j = start;
        int value = 0;
        while (j < line.Length && j - start < 6 && (uint)(line[j] - '0') <= 9)
            value = value * 10 + (line[j++] - '0');
        cpu = value;
        after = j + 1;
        return j > start && j < line.Length && line[j] == (byte)']';
    }

    // The first " [digits]" at or after from: the space before the bracket, the cpu, the index after ']'. A comm
    // rarely holds '[', so this is usually one single-byte IndexOf.
    private static int FindCpuColumn(ReadOnlySpan<byte> line, int from, out int cpu, out int after)
    {
        int search = from;
        while (search < line.Length)
        {
            int k = line[search..].IndexOf((byte)'[');
            if (k < 0)
                break;
            int b = search + k;
            if (b > from && line[b - 1] == (byte)' ' && TryCpuDigits(line, b + 1, out cpu, out after))
                return b - 1;
            search = b + 1;
        }
        cpu = 0;
        after = 0;
        return -1;
    }

    /// <summary>Decodes the 4- or 5-character flags column (see <see cref="TraceContextFlags"/>).</summary>
    internal static bool TryDecodeFlags(ReadOnlySpan<byte> f, ref TraceEvent ev)
    {
        if (f.Length is not (4 or 5))
            return false;
        var flags = TraceContextFlags.None;
        switch (f[0])
        {
            case (byte)'.': break;
            case (byte)'d': flags |= TraceContextFlags.IrqsOff; break;
            case (byte)'D': flags |= TraceContextFlags.IrqsOff | TraceContextFlags.BhOff; break;
            case (byte)'b': flags |= TraceContextFlags.BhOff; break;
            case (byte)'X': flags |= TraceContextFlags.IrqsNoSupport; break;
            default: return false;
        }
        switch (f[1])
        {
            case (byte)'.': break;
            case (byte)'n': flags |= TraceContextFlags.NeedResched; break;
            case (byte)'p': flags |= TraceContextFlags.PreemptResched; break;
            case (byte)'N': flags |= TraceContextFlags.NeedResched | TraceContextFlags.PreemptResched; break;
            case (byte)'l': flags |= TraceContextFlags.NeedReschedLazy; break;
            case (byte)'L': flags |= TraceContextFlags.NeedReschedLazy | TraceContextFlags.PreemptResched; break;
            case (byte)'b': flags |= TraceContextFlags.NeedResched | TraceContextFlags.NeedReschedLazy; break;
            case (byte)'B':
                flags |= TraceContextFlags.NeedResched | TraceContextFlags.NeedReschedLazy | TraceContextFlags.PreemptResched;
                break;
            default: return false;
        }
        switch (f[2])
        {
            case (byte)'.': break;
            case (byte)'s': flags |= TraceContextFlags.Softirq; break;
            case (byte)'h': flags |= TraceContextFlags.Hardirq; break;
            case (byte)'H': flags |= TraceContextFlags.Hardirq | TraceContextFlags.Softirq; break;
            case (byte)'z': flags |= TraceContextFlags.Nmi; break;
            case (byte)'Z': flags |= TraceContextFlags.Nmi | TraceContextFlags.Hardirq; break;
            default: return false;
        }
        int preempt = DepthDigit(f[3]);
        int migrate = f.Length == 5 ? DepthDigit(f[4]) : 0;
        if (preempt < 0 || migrate < 0)
            return false;
        ev.Context = flags;
        ev.PreemptDepth = (byte)preempt;
        ev.MigrateDisableDepth = (byte)migrate;
        return true;
    }

    private static int DepthDigit(byte c)
    {
        if (c == (byte)'.') return 0;
        int d = HexDigit(c);
        return d > 0 ? d : -1; // '0' is never printed: zero is '.'
    }

    private static bool TryParseTimestamp(ReadOnlySpan<byte> s, out long us)
    {
        // The usual shape in one pass: 1-12 second digits, '.', 1-9 fraction digits (at most 10^12 s, so no
        // overflow checks). Anything else (no fraction, a sign, more digits) goes the general way below.
        long sec = 0;
        int i = 0;
        for (; (uint)i < (uint)s.Length && i < 13; i++)
        {
            uint d = (uint)(s[i] - '0');
            if (d > 9)
                break;
            sec = sec * 10 + d;
        }
        int fracDigits = s.Length - i - 1;
        if (i is >= 1 and <= 12 && fracDigits is >= 1 and <= 9 && s[i] == (byte)'.')
        {
            long frac = 0;
            uint bad = 0;
            for (int k = i + 1; k < s.Length; k++)
            {
                uint d = (uint)(s[k] - '0');
                bad |= d > 9 ? 1u : 0u;
                frac = frac * 10 + d;
            }
            if (bad != 0)
            {
                us = 0;
                return false;
            }
            // Microsecond clocks print 6 digits; scale the others (ns clocks: 9, truncated) without a division then.
            us = sec * 1_000_000 + (fracDigits == 6 ? frac : ScaleFraction(frac, fracDigits));
            return true;
        }
        return TryParseTimestampGeneral(s, out us);
    }

    private static readonly long[] Pow10 = [1, 10, 100, 1000, 10_000, 100_000, 1_000_000];

    // A fraction of 1-9 digits to microseconds (truncating).
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long ScaleFraction(long frac, int digits) =>
        digits <= 6 ? frac * Pow10[6 - digits] : frac / Pow10[digits - 6];

    private static bool TryParseTimestampGeneral(ReadOnlySpan<byte> s, out long us)
    {
        // "%5lu.%06lu" seconds.microseconds; accept any number of fraction digits (ns clocks print 9).
        us = 0;
        int dot = s.IndexOf((byte)'.');
        ReadOnlySpan<byte> secs = dot < 0 ? s : s[..dot];
        if (!TryParseInt(secs, out long sec) || sec < 0 || sec > long.MaxValue / 1_000_000)
            return false;
        long frac = 0;
        if (dot >= 0)
        {
            ReadOnlySpan<byte> f = s[(dot + 1)..];
            if (f.IsEmpty)
                return false;
            for (int k = 0; k < f.Length; k++)
            {
                uint d = (uint)(f[k] - '0');
                if (d > 9)
                    return false;
                if (k < 6)
                    frac = frac * 10 + d;
            }
            for (int k = f.Length; k < 6; k++)
                frac *= 10;
        }
        us = sec * 1_000_000 + frac;
        return true;
    }

    // ------------------------------------------------------------------ names

    private static EventKind ClassifyEvent(ReadOnlySpan<byte> n) => n.Length switch
    {
        5 when n.SequenceEqual("kfree"u8) => EventKind.Kfree,
        7 when n.SequenceEqual("kmalloc"u8) => EventKind.Kmalloc,
        11 when n.SequenceEqual("mark_victim"u8) => EventKind.MarkVictim,
        12 when n.SequenceEqual("mm_page_free"u8) => EventKind.MmPageFree,
        12 when n.SequenceEqual("kmalloc_node"u8) => EventKind.Kmalloc,
        13 when n.SequenceEqual("mm_page_alloc"u8) => EventKind.MmPageAlloc,
        15 when n.SequenceEqual("kmem_cache_free"u8) => EventKind.KmemCacheFree,
        15 when n.SequenceEqual("alloc_vmap_area"u8) => EventKind.AllocVmapArea,
        16 when n.SequenceEqual("kmem_cache_alloc"u8) => EventKind.KmemCacheAlloc,
        20 when n.SequenceEqual("mm_page_free_batched"u8) => EventKind.MmPageFreeBatched,
        20 when n.SequenceEqual("purge_vmap_area_lazy"u8) => EventKind.PurgeVmapAreaLazy,
        21 when n.SequenceEqual("mm_page_alloc_extfrag"u8) => EventKind.MmPageAllocExtfrag,
        21 when n.SequenceEqual("mm_vmscan_kswapd_wake"u8) => EventKind.MmVmscanKswapdWake,
        21 when n.SequenceEqual("kmem_cache_alloc_node"u8) => EventKind.KmemCacheAlloc,
        22 when n.SequenceEqual("free_vmap_area_noflush"u8) => EventKind.FreeVmapAreaNoflush,
        22 when n.SequenceEqual("mm_vmscan_kswapd_sleep"u8) => EventKind.MmVmscanKswapdSleep,
        25 when n.SequenceEqual("mm_page_alloc_zone_locked"u8) => EventKind.MmPageAllocZoneLocked,
        28 when n.SequenceEqual("mm_vmscan_direct_reclaim_end"u8) => EventKind.MmVmscanDirectReclaimEnd,
        30 when n.SequenceEqual("mm_vmscan_direct_reclaim_begin"u8) => EventKind.MmVmscanDirectReclaimBegin,
        _ => EventKind.None,
    };

    internal enum FieldId : byte
    {
        Unknown,
        CallSite, Ptr, BytesReq, BytesAlloc, GfpFlags, Node, Accounted, Name,
        Page, Pfn, Order, MigrateType, PercpuRefill, Cold,
        AllocOrder, FallbackOrder, PageblockOrder, AllocMigrateType, FallbackMigrateType, Fragmenting, ChangeOwnership,
        VaStart, Size, Align, VStart, VEnd, Failed, NrLazy, NrLazyMax, Start, End, NumPurged,
        Nid, NrReclaimed, Pid,
        Count,
    }

    private static FieldId ClassifyField(ReadOnlySpan<byte> k) => k.Length switch
    {
        3 when k.SequenceEqual("ptr"u8) => FieldId.Ptr,
        3 when k.SequenceEqual("pfn"u8) => FieldId.Pfn,
        3 when k.SequenceEqual("end"u8) => FieldId.End,
        3 when k.SequenceEqual("nid"u8) => FieldId.Nid,
        3 when k.SequenceEqual("pid"u8) => FieldId.Pid,
        4 when k.SequenceEqual("name"u8) => FieldId.Name,
        4 when k.SequenceEqual("node"u8) => FieldId.Node,
        4 when k.SequenceEqual("page"u8) => FieldId.Page,
        4 when k.SequenceEqual("size"u8) => FieldId.Size,
        4 when k.SequenceEqual("vend"u8) => FieldId.VEnd,
        4 when k.SequenceEqual("cold"u8) => FieldId.Cold,
        5 when k.SequenceEqual("order"u8) => FieldId.Order,
        5 when k.SequenceEqual("align"u8) => FieldId.Align,
        5 when k.SequenceEqual("start"u8) => FieldId.Start,
        6 when k.SequenceEqual("vstart"u8) => FieldId.VStart,
        6 when k.SequenceEqual("failed"u8) => FieldId.Failed,
        7 when k.SequenceEqual("nr_lazy"u8) => FieldId.NrLazy,
        8 when k.SequenceEqual("va_start"u8) => FieldId.VaStart,
        9 when k.SequenceEqual("call_site"u8) => FieldId.CallSite,
        9 when k.SequenceEqual("bytes_req"u8) => FieldId.BytesReq,
        9 when k.SequenceEqual("gfp_flags"u8) => FieldId.GfpFlags,
        9 when k.SequenceEqual("accounted"u8) => FieldId.Accounted,
        10 when k.SequenceEqual("num_purged"u8) => FieldId.NumPurged,
        11 when k.SequenceEqual("bytes_alloc"u8) => FieldId.BytesAlloc,
        11 when k.SequenceEqual("migratetype"u8) => FieldId.MigrateType,
        11 when k.SequenceEqual("nr_lazy_max"u8) => FieldId.NrLazyMax,
        11 when k.SequenceEqual("alloc_order"u8) => FieldId.AllocOrder,
        11 when k.SequenceEqual("fragmenting"u8) => FieldId.Fragmenting,
        12 when k.SequenceEqual("nr_reclaimed"u8) => FieldId.NrReclaimed,
        13 when k.SequenceEqual("percpu_refill"u8) => FieldId.PercpuRefill,
        14 when k.SequenceEqual("fallback_order"u8) => FieldId.FallbackOrder,
        15 when k.SequenceEqual("pageblock_order"u8) => FieldId.PageblockOrder,
        16 when k.SequenceEqual("change_ownership"u8) => FieldId.ChangeOwnership,
        17 when k.SequenceEqual("alloc_migratetype"u8) => FieldId.AllocMigrateType,
        20 when k.SequenceEqual("fallback_migratetype"u8) => FieldId.FallbackMigrateType,
        _ => FieldId.Unknown,
    };

    private static ulong Bits(params ReadOnlySpan<FieldId> fields)
    {
        ulong m = 0;
        foreach (FieldId f in fields)
            m |= 1UL << (int)f;
        return m;
    }

    private static readonly ulong[] RequiredByKind = BuildRequired();

    private static ulong[] BuildRequired()
    {
        var r = new ulong[EventKindExtensions.Count];
        ulong slabAlloc = Bits(FieldId.CallSite, FieldId.Ptr, FieldId.BytesReq, FieldId.BytesAlloc, FieldId.GfpFlags);
        r[(int)EventKind.Kmalloc] = slabAlloc;
        r[(int)EventKind.KmemCacheAlloc] = slabAlloc;
        r[(int)EventKind.Kfree] = Bits(FieldId.CallSite, FieldId.Ptr);
        r[(int)EventKind.KmemCacheFree] = Bits(FieldId.CallSite, FieldId.Ptr);
        r[(int)EventKind.MmPageAlloc] = Bits(FieldId.Page, FieldId.Pfn, FieldId.Order, FieldId.MigrateType, FieldId.GfpFlags);
        r[(int)EventKind.MmPageFree] = Bits(FieldId.Page, FieldId.Pfn, FieldId.Order);
        r[(int)EventKind.MmPageFreeBatched] = Bits(FieldId.Page, FieldId.Pfn);
        r[(int)EventKind.AllocVmapArea] = Bits(FieldId.VaStart, FieldId.Size, FieldId.Align, FieldId.VStart, FieldId.VEnd, FieldId.Failed);
        r[(int)EventKind.FreeVmapAreaNoflush] = Bits(FieldId.VaStart, FieldId.NrLazy, FieldId.NrLazyMax);
        r[(int)EventKind.PurgeVmapAreaLazy] = Bits(FieldId.Start, FieldId.End, FieldId.NumPurged);
        r[(int)EventKind.MmPageAllocZoneLocked] = Bits(FieldId.Page, FieldId.Pfn, FieldId.Order, FieldId.MigrateType);
        r[(int)EventKind.MmPageAllocExtfrag] = Bits(FieldId.Page, FieldId.Pfn, FieldId.AllocOrder, FieldId.FallbackOrder,
            FieldId.AllocMigrateType, FieldId.FallbackMigrateType);
        r[(int)EventKind.MmVmscanKswapdWake] = Bits(FieldId.Nid, FieldId.Order);
        r[(int)EventKind.MmVmscanKswapdSleep] = Bits(FieldId.Nid);
        r[(int)EventKind.MmVmscanDirectReclaimBegin] = Bits(FieldId.Order, FieldId.GfpFlags);
        r[(int)EventKind.MmVmscanDirectReclaimEnd] = Bits(FieldId.NrReclaimed);
        r[(int)EventKind.MarkVictim] = Bits(FieldId.Pid);
        return r;
    }

    private static ulong Required(EventKind kind) => RequiredByKind[(int)kind];

    private readonly struct FieldSpec
    {
        public readonly byte[] Key;
        public readonly FieldId Id;
        // The key's bytes 0-7 and 8-15 as little-endian words with masks (keys are at most 16 bytes), so that a match
        // on a line with 16 bytes to spare is two loads, two ANDs and two compares.
        private readonly ulong _lo, _loMask, _hi, _hiMask;

        public FieldSpec(byte[] key, FieldId id)
        {
            if (key.Length > 16) throw new ArgumentException("field keys are at most 16 bytes", nameof(key));
            Key = key;
            Id = id;
            Span<byte> padded = stackalloc byte[16];
            padded.Clear();
            key.CopyTo(padded);
            _lo = BinaryPrimitives.ReadUInt64LittleEndian(padded);
            _hi = BinaryPrimitives.ReadUInt64LittleEndian(padded[8..]);
            _loMask = key.Length >= 8 ? ulong.MaxValue : (1UL << (8 * key.Length)) - 1;
            _hiMask = key.Length <= 8 ? 0 : key.Length == 16 ? ulong.MaxValue : (1UL << (8 * (key.Length - 8))) - 1;
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public bool IsPrefixOf(ReadOnlySpan<byte> s, int pos)
        {
            if ((uint)pos <= (uint)s.Length && s.Length - pos >= 16)
            {
                ref byte r = ref Unsafe.Add(ref MemoryMarshal.GetReference(s), pos);
                ulong lo = Unsafe.ReadUnaligned<ulong>(ref r);
                ulong hi = Unsafe.ReadUnaligned<ulong>(ref Unsafe.Add(ref r, 8));
                if (!BitConverter.IsLittleEndian) { lo = BinaryPrimitives.ReverseEndianness(lo); hi = BinaryPrimitives.ReverseEndianness(hi); }
                return (((lo & _loMask) ^ _lo) | ((hi & _hiMask) ^ _hi)) == 0;
            }
            return s[pos..].StartsWith(Key);
        }
    }

    // Field order of the TP_printk formats in Linux 6.18 (include/trace/events/kmem.h, vmalloc.h).
    private static readonly FieldSpec[]?[] Layouts = BuildLayouts();

    private static FieldSpec[]?[] BuildLayouts()
    {
        static FieldSpec F(string key, FieldId id) => new(System.Text.Encoding.ASCII.GetBytes(key), id);
        FieldSpec[] slabAllocTail =
        [
            F("bytes_req=", FieldId.BytesReq), F("bytes_alloc=", FieldId.BytesAlloc), F("gfp_flags=", FieldId.GfpFlags),
            F("node=", FieldId.Node), F("accounted=", FieldId.Accounted),
        ];
        var l = new FieldSpec[]?[EventKindExtensions.Count];
        l[(int)EventKind.Kmalloc] = [F("call_site=", FieldId.CallSite), F("ptr=", FieldId.Ptr), .. slabAllocTail];
        l[(int)EventKind.KmemCacheAlloc] =
            [F("call_site=", FieldId.CallSite), F("ptr=", FieldId.Ptr), F("name=", FieldId.Name), .. slabAllocTail];
        l[(int)EventKind.Kfree] = [F("call_site=", FieldId.CallSite), F("ptr=", FieldId.Ptr)];
        l[(int)EventKind.KmemCacheFree] = [F("call_site=", FieldId.CallSite), F("ptr=", FieldId.Ptr), F("name=", FieldId.Name)];
        l[(int)EventKind.MmPageAlloc] =
        [
            F("page=", FieldId.Page), F("pfn=", FieldId.Pfn), F("order=", FieldId.Order),
            F("migratetype=", FieldId.MigrateType), F("gfp_flags=", FieldId.GfpFlags),
        ];
        l[(int)EventKind.MmPageFree] = [F("page=", FieldId.Page), F("pfn=", FieldId.Pfn), F("order=", FieldId.Order)];
        l[(int)EventKind.MmPageFreeBatched] = l[(int)EventKind.MmPageFree];
        l[(int)EventKind.AllocVmapArea] =
        [
            F("va_start: ", FieldId.VaStart), F("size=", FieldId.Size), F("align=", FieldId.Align),
            F("vstart=", FieldId.VStart), F("vend=", FieldId.VEnd), F("failed=", FieldId.Failed),
        ];
        l[(int)EventKind.FreeVmapAreaNoflush] =
            [F("va_start=", FieldId.VaStart), F("nr_lazy=", FieldId.NrLazy), F("nr_lazy_max=", FieldId.NrLazyMax)];
        l[(int)EventKind.PurgeVmapAreaLazy] =
            [F("start=", FieldId.Start), F("end=", FieldId.End), F("num_purged=", FieldId.NumPurged)];
        return l;
    }

    private static class Errors
    {
        public const string NoCpuColumn = "no [cpu] column";
        public const string BadTaskPid = "bad task-pid column";
        public const string BadFlags = "bad flags column";
        public const string BadTimestamp = "bad timestamp";
        public const string NoEventName = "no event name";
        public const string NotKeyValue = "field is not key=value";

        private static readonly string[] Names =
        [
            "?", "call_site", "ptr", "bytes_req", "bytes_alloc", "gfp_flags", "node", "accounted", "name",
            "page", "pfn", "order", "migratetype", "percpu_refill", "cold",
            "alloc_order", "fallback_order", "pageblock_order", "alloc_migratetype", "fallback_migratetype",
            "fragmenting", "change_ownership",
            "va_start", "size", "align", "vstart", "vend", "failed", "nr_lazy", "nr_lazy_max", "start", "end",
            "num_purged", "nid", "nr_reclaimed", "pid",
        ];

        public static readonly string[] BadValue = Names.Select(n => "bad value for " + n).ToArray();
        public static readonly string[] Missing = Names.Select(n => "missing field " + n).ToArray();
    }

    // ------------------------------------------------------------------ tokens and numbers

    /// <summary>Index of the first space at or after <paramref name="pos"/> (at most the length), or the length.</summary>
    // 16 bytes per step (values are 1-40 bytes, so one or two steps); the last partial block as an overlapping load
    // of the line's final 16 bytes with the bytes before pos shifted out. Only lines under 16 bytes scan bytes.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int NextSpace(ReadOnlySpan<byte> line, int pos)
    {
        int n = line.Length;
        if (Vector128.IsHardwareAccelerated && n >= 16)
        {
            ref byte r = ref MemoryMarshal.GetReference(line);
            Vector128<byte> sp = Vector128.Create((byte)' ');
            for (; pos <= n - 16; pos += 16)
            {
                uint bits = Vector128.Equals(Vector128.LoadUnsafe(ref r, (nuint)pos), sp).ExtractMostSignificantBits();
                if (bits != 0)
                    return pos + BitOperations.TrailingZeroCount(bits);
            }
            if (pos >= n)
                return n;
            uint tail = Vector128.Equals(Vector128.LoadUnsafe(ref r, (nuint)(n - 16)), sp).ExtractMostSignificantBits();
            tail >>= pos - (n - 16);
            return tail != 0 ? pos + BitOperations.TrailingZeroCount(tail) : n;
        }
        while ((uint)pos < (uint)n && line[pos] != (byte)' ')
            pos++;
        return pos;
    }

    // NextToken with a vectorized space search (header tokens and field values are mostly 5-40 bytes).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ReadOnlySpan<byte> NextTokenVector(ReadOnlySpan<byte> line, scoped ref int pos)
    {
        int start = pos;
        int i = NextSpace(line, start);
        pos = i < line.Length ? i + 1 : i;
        return line[start..i];
    }

    // End of line[..end].TrimEnd(' ') for the pid's padding (0-6 spaces): the last non-space among the 16 bytes
    // before end. Bytes before the line's first non-space are spaces, so the result never precedes it.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int TrimSpacesBefore(ReadOnlySpan<byte> line, int end)
    {
        if (Vector128.IsHardwareAccelerated && end >= 16 && end <= line.Length)
        {
            uint nonSpace = ~Vector128.Equals(Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(line), (nuint)(end - 16)),
                Vector128.Create((byte)' ')).ExtractMostSignificantBits() & 0xFFFF;
            if (nonSpace != 0)
                return end - 16 + (32 - BitOperations.LeadingZeroCount(nonSpace));
        }
        return line[..end].TrimEnd((byte)' ').Length;
    }

    // SkipSpaces for the comm's right-aligning padding (0-15 spaces, a mispredicted loop exit per line if scalar).
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SkipSpacesVector(ReadOnlySpan<byte> s, int pos)
    {
        if (Vector128.IsHardwareAccelerated && s.Length - pos >= 16)
        {
            uint bits = ~Vector128.Equals(Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(s), (nuint)pos),
                Vector128.Create((byte)' ')).ExtractMostSignificantBits() & 0xFFFF;
            if (bits != 0)
                return pos + BitOperations.TrailingZeroCount(bits);
            pos += 16;
        }
        return SkipSpaces(s, pos);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SkipSpaces(ReadOnlySpan<byte> s, int pos)
    {
        while ((uint)pos < (uint)s.Length && s[pos] == (byte)' ')
            pos++;
        return pos;
    }

    // Tokens are short (5-40 bytes): a scalar scan beats a vectorized IndexOf's setup cost here.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ReadOnlySpan<byte> NextToken(ReadOnlySpan<byte> s, scoped ref int pos)
    {
        int start = pos;
        int i = start;
        while ((uint)i < (uint)s.Length && s[i] != (byte)' ')
            i++;
        pos = i < s.Length ? i + 1 : i;
        return s[start..i];
    }

    // NextToken that also reports the offset of the token's first '=' (-1 if none), in the same pass.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ReadOnlySpan<byte> NextToken(ReadOnlySpan<byte> s, scoped ref int pos, out int eq)
    {
        int start = pos;
        int i = start;
        eq = -1;
        while ((uint)i < (uint)s.Length)
        {
            byte c = s[i];
            if (c == (byte)' ')
                break;
            if (c == (byte)'=' && eq < 0)
                eq = i - start;
            i++;
        }
        pos = i < s.Length ? i + 1 : i;
        return s[start..i];
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int HexDigit(byte c)
    {
        uint d = (uint)(c - '0');
        if (d <= 9)
            return (int)d;
        uint l = (uint)((c | 0x20) - 'a');
        return l <= 5 ? (int)l + 10 : -1;
    }

    /// <summary>Hex digits, with or without 0x (%p prints none; "(null)" is NULL).</summary>
    internal static bool TryParsePointer(ReadOnlySpan<byte> s, out ulong value)
    {
        if (s.Length > 2 && s[0] == (byte)'0' && (s[1] | 0x20) == 'x')
            s = s[2..];
        else if (s.SequenceEqual("(null)"u8))
        {
            value = 0;
            return true;
        }
        return TryParseHexDigits(s, out value);
    }

    // Nibble value of each byte; 0xFF for bytes that are not hex digits.
    private static ReadOnlySpan<byte> HexValues =>
    [
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    ];

    private static bool TryParseHexDigits(ReadOnlySpan<byte> s, out ulong value)
    {
        if (s.Length == 16 && Vector128.IsHardwareAccelerated)
            return TryParseHex16(s, out value);
        value = 0;
        if (s.IsEmpty || s.Length > 16)
            return false;
        // Branch-free per digit: %p prints 16 random-looking digits, so per-digit branches mispredict.
        ReadOnlySpan<byte> table = HexValues;
        ulong v = 0;
        uint bad = 0;
        foreach (byte c in s)
        {
            uint d = table[c];
            bad |= d;
            v = (v << 4) | (d & 0xF);
        }
        if ((bad & 0xF0) != 0)
            return false;
        value = v;
        return true;
    }

    // Exactly 16 hex digits (what %p prints on 64-bit) in one vector: validate all, map to nibbles, then pack the
    // nibble bytes pairwise into a big-endian value with shifts and masks.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryParseHex16(ReadOnlySpan<byte> s, out ulong value)
    {
        Vector128<byte> v = Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(s));
        Vector128<byte> digit = v - Vector128.Create((byte)'0');
        Vector128<byte> letter = (v | Vector128.Create((byte)0x20)) - Vector128.Create((byte)'a');
        Vector128<byte> isDigit = Vector128.LessThanOrEqual(digit, Vector128.Create((byte)9));
        Vector128<byte> isLetter = Vector128.LessThanOrEqual(letter, Vector128.Create((byte)5));
        if ((isDigit | isLetter).ExtractMostSignificantBits() != 0xFFFF)
        {
            value = 0;
            return false;
        }
        Vector128<byte> nibbles = Vector128.ConditionalSelect(isDigit, digit, letter + Vector128.Create((byte)10));
        value = ((ulong)PackNibbles(nibbles.AsUInt64().GetElement(0)) << 32) | PackNibbles(nibbles.AsUInt64().GetElement(1));
        return true;
    }

    // 8 nibble bytes, the first (lowest-addressed) the most significant, to a 32-bit value.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint PackNibbles(ulong n)
    {
        if (!BitConverter.IsLittleEndian)
            n = BinaryPrimitives.ReverseEndianness(n);
        ulong t = ((n & 0x00FF00FF00FF00FFUL) << 4) | ((n >> 8) & 0x00FF00FF00FF00FFUL); // byte pairs in 16-bit lanes
        t = (t | (t >> 8)) & 0x0000FFFF0000FFFFUL;
        t = (t | (t >> 16)) & 0xFFFFFFFFUL;                                              // 4 bytes, first pair lowest
        return BinaryPrimitives.ReverseEndianness((uint)t);
    }

    /// <summary>Unsigned decimal, or hex with a 0x prefix (pfn= is 0x%lx in 6.x, %lu before).</summary>
    internal static bool TryParseNumber(ReadOnlySpan<byte> s, out ulong value)
    {
        if (s.Length > 2 && s[0] == (byte)'0' && (s[1] | 0x20) == 'x')
            return TryParseHexDigits(s[2..], out value);
        value = 0;
        if (s.IsEmpty || s.Length > 20)
            return false;
        ulong v = 0;
        foreach (byte c in s)
        {
            uint d = (uint)(c - '0');
            if (d > 9 || v > (ulong.MaxValue - d) / 10)
                return false;
            v = v * 10 + d;
        }
        value = v;
        return true;
    }

    /// <summary>Signed decimal (64-bit).</summary>
    internal static bool TryParseInt(ReadOnlySpan<byte> s, out long value)
    {
        value = 0;
        bool negative = !s.IsEmpty && s[0] == (byte)'-';
        if (negative)
            s = s[1..];
        if (s.IsEmpty || s.Length > 19)
            return false;
        long v = 0;
        foreach (byte c in s)
        {
            uint d = (uint)(c - '0');
            if (d > 9)
                return false;
            v = v * 10 + d;
        }
        // At most 19 digits: a value above long.MaxValue is below 10^19 < 2^64, so it wrapped to negative.
        if (v < 0)
            return false;
        value = negative ? -v : v;
        return true;
    }

    private static bool TryParseInt32(ReadOnlySpan<byte> s, out int value)
    {
        if (TryParseInt(s, out long v) && v is >= int.MinValue and <= int.MaxValue)
        {
            value = (int)v;
            return true;
        }
        value = 0;
        return false;
    }
}
