using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace Kmem;

/// <summary>
/// Prints and parses GFP masks exactly as ftrace's <c>gfp_flags=</c> field shows them, so kmem's own traces
/// and views diff cleanly against a real kernel's and real traces can be replayed.
/// </summary>
/// <remarks>
/// <para><b>The printed form.</b> Linux prints the field with show_gfp_flags() (include/trace/events/mmflags.h):
/// 0 prints <c>none</c>; otherwise __print_flags() walks one name table in order and, for every entry whose
/// whole mask is still set in the remaining flags, prints the name and clears those bits (greedy). The walk stops
/// as soon as nothing is left; any bits no entry covers are printed last as one lowercase <c>0x…</c> number.
/// Entries are joined with <c>|</c>. The table lists the composite types first, widest first (so
/// GFP_HIGHUSER_MOVABLE wins over GFP_USER), then <c>__GFP_RECLAIM</c>, then each __GFP_ bit in bit order.
/// Because GFP_DMA and GFP_DMA32 precede <c>__GFP_DMA</c>/<c>__GFP_DMA32</c> and have the same value, the
/// double-underscore zone names are never printed, only parsed.</para>
/// <para><b>Config-dependent names.</b> The table is the one of the traced kernel (x86-64, no KASAN_HW_TAGS, no
/// LOCKDEP): no __GFP_SKIP_ZERO, __GFP_SKIP_KASAN or __GFP_NOLOCKDEP entries. __GFP_NO_OBJ_EXT has no entry in
/// any config, so it prints as <c>0x1000000</c>.</para>
/// <para><b>Cost.</b> <see cref="TryFormat"/> and <see cref="TryParse"/> never allocate (they run on trace and
/// replay paths for every event); <see cref="Format"/> allocates only the returned string;
/// <see cref="Parse"/> allocates only to throw.</para>
/// </remarks>
public static class GfpFormat
{
    /// <summary>What ftrace prints for a zero mask.</summary>
    public const string NoneName = "none";

    private const char Separator = '|';

    /// <summary>One row of Linux's __def_gfpflag_names: printed when all of <see cref="Mask"/> is still set.</summary>
    private readonly struct FlagName(Gfp mask, string name)
    {
        public readonly uint Mask = (uint)mask;
        public readonly string Name = name;
    }

    // The kernel's table order (mmflags.h __def_gfpflag_names then TRACE_GFP_FLAGS); order decides the output.
    private static readonly FlagName[] Names =
    [
        new(Gfp.TransHuge, "GFP_TRANSHUGE"),
        new(Gfp.TransHugeLight, "GFP_TRANSHUGE_LIGHT"),
        new(Gfp.HighUserMovable, "GFP_HIGHUSER_MOVABLE"),
        new(Gfp.HighUser, "GFP_HIGHUSER"),
        new(Gfp.User, "GFP_USER"),
        new(Gfp.KernelAccount, "GFP_KERNEL_ACCOUNT"),
        new(Gfp.Kernel, "GFP_KERNEL"),
        new(Gfp.NoFs, "GFP_NOFS"),
        new(Gfp.Atomic, "GFP_ATOMIC"),
        new(Gfp.NoIo, "GFP_NOIO"),
        new(Gfp.NoWait, "GFP_NOWAIT"),
        new(Gfp.GfpDma, "GFP_DMA"),
        new(Gfp.GfpDma32, "GFP_DMA32"),
        new(Gfp.Reclaim, "__GFP_RECLAIM"),
        new(Gfp.Dma, "__GFP_DMA"),
        new(Gfp.HighMem, "__GFP_HIGHMEM"),
        new(Gfp.Dma32, "__GFP_DMA32"),
        new(Gfp.Movable, "__GFP_MOVABLE"),
        new(Gfp.Reclaimable, "__GFP_RECLAIMABLE"),
        new(Gfp.High, "__GFP_HIGH"),
        new(Gfp.Io, "__GFP_IO"),
        new(Gfp.Fs, "__GFP_FS"),
        new(Gfp.Zero, "__GFP_ZERO"),
        new(Gfp.DirectReclaim, "__GFP_DIRECT_RECLAIM"),
        new(Gfp.KswapdReclaim, "__GFP_KSWAPD_RECLAIM"),
        new(Gfp.Write, "__GFP_WRITE"),
        new(Gfp.NoWarn, "__GFP_NOWARN"),
        new(Gfp.RetryMayFail, "__GFP_RETRY_MAYFAIL"),
        new(Gfp.NoFail, "__GFP_NOFAIL"),
        new(Gfp.NoRetry, "__GFP_NORETRY"),
        new(Gfp.MemAlloc, "__GFP_MEMALLOC"),
        new(Gfp.Comp, "__GFP_COMP"),
        new(Gfp.NoMemAlloc, "__GFP_NOMEMALLOC"),
        new(Gfp.HardWall, "__GFP_HARDWALL"),
        new(Gfp.ThisNode, "__GFP_THISNODE"),
        new(Gfp.Account, "__GFP_ACCOUNT"),
        new(Gfp.ZeroTags, "__GFP_ZEROTAGS"),
    ];

    /// <summary>
    /// An upper bound on the length of any formatted mask: every name once, a separator after each, and the
    /// leftover <c>0x</c> plus 8 hex digits. A buffer of this size always makes <see cref="TryFormat"/> succeed.
    /// </summary>
    public static readonly int MaxLength = ComputeMaxLength();

    private static int ComputeMaxLength()
    {
        int total = "0x".Length + 2 * sizeof(uint);
        foreach (FlagName entry in Names)
        {
            total += entry.Name.Length + 1;
        }

        return total;
    }

    /// <summary>The mask as ftrace's <c>gfp_flags=</c> prints it, e.g. <c>GFP_KERNEL_ACCOUNT|__GFP_ZERO</c>.</summary>
    public static string Format(Gfp gfp)
    {
        if (gfp == Gfp.None)
        {
            return NoneName;
        }

        Span<char> buffer = stackalloc char[MaxLength];
        bool ok = TryFormat(gfp, buffer, out int written);
        Debug.Assert(ok, "MaxLength bounds every output");
        return new string(buffer[..written]);
    }

    /// <summary>
    /// Writes <see cref="Format"/>'s text into <paramref name="destination"/> without allocating. Returns false,
    /// with <paramref name="written"/> = 0, when the text does not fit (<see cref="MaxLength"/> always fits).
    /// </summary>
    public static bool TryFormat(Gfp gfp, Span<char> destination, out int written)
    {
        uint flags = (uint)gfp;
        written = 0;
        if (flags == 0)
        {
            if (!NoneName.TryCopyTo(destination))
            {
                return false;
            }

            written = NoneName.Length;
            return true;
        }

        int pos = 0;
        FlagName[] names = Names;
        for (int i = 0; i < names.Length && flags != 0; i++)
        {
            uint mask = names[i].Mask;
            if ((flags & mask) != mask)
            {
                continue;
            }

            flags &= ~mask;
            if (!Append(destination, ref pos, names[i].Name))
            {
                return false;
            }
        }

        if (flags != 0)
        {
            // __print_flags' "0x%lx": lowercase, no padding.
            if (pos != 0)
            {
                if ((uint)pos >= (uint)destination.Length)
                {
                    return false;
                }

                destination[pos++] = Separator;
            }

            if (!"0x".TryCopyTo(destination[pos..]))
            {
                return false;
            }

            pos += 2;
            if (!flags.TryFormat(destination[pos..], out int digits, "x", CultureInfo.InvariantCulture))
            {
                return false;
            }

            pos += digits;
        }

        written = pos;
        return true;
    }

    private static bool Append(Span<char> destination, ref int pos, string name)
    {
        if (pos != 0)
        {
            if ((uint)pos >= (uint)destination.Length)
            {
                return false;
            }

            destination[pos++] = Separator;
        }

        if (!name.TryCopyTo(destination[pos..]))
        {
            return false;
        }

        pos += name.Length;
        return true;
    }

    /// <summary>
    /// Parses the printed form back: <c>none</c>, or <c>|</c>-joined table names (composite or single-bit, in any
    /// order, ORed together) and hex numbers (<c>0x</c> and 1 to 8 digits). Throws <see cref="FormatException"/>
    /// naming the first token it does not know.
    /// </summary>
    public static Gfp Parse(ReadOnlySpan<char> text)
    {
        ParseStatus status = ParseCore(text, out Gfp gfp, out int badStart, out int badLength);
        if (status != ParseStatus.Ok)
        {
            ThrowParseError(text, status, badStart, badLength);
        }

        return gfp;
    }

    /// <summary>As <see cref="Parse"/>, but returns false instead of throwing; never allocates.</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out Gfp gfp) =>
        ParseCore(text, out gfp, out _, out _) == ParseStatus.Ok;

    private enum ParseStatus : byte
    {
        Ok,
        Empty,
        EmptyToken,
        UnknownName,
        BadHex,
        NoneNotAlone,
    }

    private static ParseStatus ParseCore(ReadOnlySpan<char> text, out Gfp gfp, out int badStart, out int badLength)
    {
        gfp = Gfp.None;
        badStart = 0;
        badLength = text.Length;
        if (text.IsEmpty)
        {
            return ParseStatus.Empty;
        }

        if (text.SequenceEqual(NoneName))
        {
            return ParseStatus.Ok;
        }

        uint flags = 0;
        int start = 0;
        while (true)
        {
            int end = text[start..].IndexOf(Separator);
            int length = end < 0 ? text.Length - start : end;
            ReadOnlySpan<char> token = text.Slice(start, length);
            badStart = start;
            badLength = length;

            ParseStatus status = ParseToken(token, ref flags);
            if (status != ParseStatus.Ok)
            {
                return status;
            }

            if (end < 0)
            {
                break;
            }

            start += length + 1;
        }

        gfp = (Gfp)flags;
        return ParseStatus.Ok;
    }

    private static ParseStatus ParseToken(ReadOnlySpan<char> token, ref uint flags)
    {
        if (token.IsEmpty)
        {
            return ParseStatus.EmptyToken;
        }

        if (token.Length > 2 && token[0] == '0' && (token[1] == 'x' || token[1] == 'X'))
        {
            ReadOnlySpan<char> digits = token[2..];
            if (digits.Length > 2 * sizeof(uint)
                || !uint.TryParse(digits, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out uint value))
            {
                return ParseStatus.BadHex;
            }

            flags |= value;
            return ParseStatus.Ok;
        }

        if (token.SequenceEqual(NoneName))
        {
            return ParseStatus.NoneNotAlone;
        }

        FlagName[] names = Names;
        for (int i = 0; i < names.Length; i++)
        {
            if (token.SequenceEqual(names[i].Name))
            {
                flags |= names[i].Mask;
                return ParseStatus.Ok;
            }
        }

        return ParseStatus.UnknownName;
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ThrowParseError(ReadOnlySpan<char> text, ParseStatus status, int badStart, int badLength)
    {
        string whole = text.ToString();
        string token = text.Slice(badStart, badLength).ToString();
        string reason = status switch
        {
            ParseStatus.Empty => "is empty",
            ParseStatus.EmptyToken => $"has an empty flag name at offset {badStart}",
            ParseStatus.UnknownName => $"has unknown flag name '{token}' at offset {badStart}",
            ParseStatus.BadHex => $"has invalid hex flags '{token}' at offset {badStart} (expected 0x and 1 to 8 hex digits)",
            ParseStatus.NoneNotAlone => $"combines '{NoneName}' with other flags at offset {badStart}",
            _ => "is invalid",
        };
        throw new FormatException($"GFP flags '{whole}' {reason}.");
    }

    /// <summary>
    /// Linux's <c>mode:%#x(%pGg)</c> rendering used in allocation reports, e.g. <c>0xcc0(GFP_KERNEL)</c>.
    /// </summary>
    internal static string FormatMode(Gfp gfp) =>
        string.Create(CultureInfo.InvariantCulture, $"0x{(uint)gfp:x}({Format(gfp)})");
}
