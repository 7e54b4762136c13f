using System.Buffers;
using System.Buffers.Binary;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Text;

namespace Kmem.Tracing;

/// <summary>
/// Interned strings of a trace (task comms, call sites, cache names, GFP texts), addressed by dense ids.
/// Id 0 is the empty string, meaning "absent". The table only grows with distinct texts, which a kernel bounds
/// (symbols, caches, comms), not with trace length. Lookups from byte spans go through a
/// <see cref="Dictionary{TKey,TValue}.AlternateLookup{TAlternateKey}"/> on <see cref="ReadOnlySpan{T}"/> of char,
/// so a repeated text costs a widening copy onto the stack and a hash probe, and allocates nothing.
/// Byte-span interning (the trace parser's path) first consults a small direct-mapped cache of recently seen
/// byte texts, indexed by a hash of their length and first and last 8 bytes: a hit costs one vectorized compare
/// and skips the widening and the string hash; a miss (or collision) falls through to the dictionary.
/// </summary>
public sealed class TraceStringTable
{
    private readonly List<string> _strings = [""];
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal) { [""] = 0 };
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    // Additions and reads by id are locked so that one thread may intern (a parser) while others read texts by id
    // (EventPipeline's consumer). Lookups by text are for the interning thread only.
    private readonly Lock _gate = new();

    /// <summary>Creates an empty table (holding only id 0, the empty string).</summary>
    public TraceStringTable() => _lookup = _ids.GetAlternateLookup<ReadOnlySpan<char>>();

    /// <summary>Number of ids handed out, including id 0.</summary>
    public int Count
    {
        get { lock (_gate) return _strings.Count; }
    }

    /// <summary>The text of an id.</summary>
    public string this[int id]
    {
        get { lock (_gate) return _strings[id]; }
    }

    /// <summary>Id of <paramref name="text"/>, adding it if new.</summary>
    public int Intern(ReadOnlySpan<char> text)
    {
        if (_lookup.TryGetValue(text, out int id))
            return id;
        string s = text.ToString();
        lock (_gate)
        {
            id = _strings.Count;
            _strings.Add(s);
            _ids.Add(s, id);
        }
        return id;
    }

    /// <summary>Id of <paramref name="text"/> if it was interned.</summary>
    public bool TryGetId(ReadOnlySpan<char> text, out int id) => _lookup.TryGetValue(text, out id);

    // Direct-mapped byte-text cache in front of the dictionary. 1024 entries: traces hold a few hundred
    // distinct texts (214 in forkexec.trace), so collisions are few; texts over 128 bytes are not cached. Hot texts
    // that share a slot evict each other on every alternation (24,531 misses in forkexec.trace's 623,535 events,
    // 28,574 in fs.trace's 402,273), so a replacement must not allocate: each slot's text lives in a fixed 128-byte
    // stretch of _cacheText (a new byte[] per replacement was ~2 bytes per event). A two-way cache cut the misses to
    // 1,796 and 675 but measured no faster (parse-only, 0.36 us/event either way): a miss costs ~0.1 us.
    private const int CacheBits = 10;
    private const int MaxCachedLength = 128;
    private readonly byte[] _cacheText = new byte[(1 << CacheBits) * MaxCachedLength];
    private readonly byte[] _cacheLengths = new byte[1 << CacheBits]; // 0: empty slot
    private readonly int[] _cacheIds = new int[1 << CacheBits];

    /// <summary>Id of an ASCII/UTF-8 byte span, adding it if new. Invalid UTF-8 becomes U+FFFD.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Intern(ReadOnlySpan<byte> utf8)
    {
        if (utf8.Length is >= 1 and <= MaxCachedLength)
        {
            int slot = CacheSlot(utf8);
            Span<byte> text = _cacheText.AsSpan(slot * MaxCachedLength, utf8.Length);
            if (_cacheLengths[slot] == utf8.Length && utf8.SequenceEqual(text))
                return _cacheIds[slot];
            int id = InternSlow(utf8);
            utf8.CopyTo(text);
            _cacheLengths[slot] = (byte)utf8.Length;
            _cacheIds[slot] = id;
            return id;
        }
        return InternSlow(utf8);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int CacheSlot(ReadOnlySpan<byte> s)
    {
        ulong head, tail;
        if (s.Length >= 8)
        {
            head = BinaryPrimitives.ReadUInt64LittleEndian(s);
            tail = BinaryPrimitives.ReadUInt64LittleEndian(s[^8..]);
        }
        else
        {
            head = 0;
            foreach (byte b in s)
                head = (head << 8) | b;
            tail = head;
        }
        ulong h = (head * 0x9E3779B97F4A7C15UL) ^ BitOperations.RotateLeft(tail * 0xC2B2AE3D27D4EB4FUL, 31) ^ (ulong)s.Length;
        return (int)((h * 0x9E3779B97F4A7C15UL) >> (64 - CacheBits));
    }

    [SkipLocalsInit]
    private int InternSlow(ReadOnlySpan<byte> utf8)
    {
        // Lines are ASCII in practice (symbols, cache names); comms may hold UTF-8.
        const int StackLimit = 256;
        char[]? rented = null;
        Span<char> chars = utf8.Length <= StackLimit
            ? stackalloc char[StackLimit]
            : (rented = ArrayPool<char>.Shared.Rent(utf8.Length));
        try
        {
            int n;
            if (Ascii.ToUtf16(utf8, chars, out n) != OperationStatus.Done)
                n = Encoding.UTF8.GetChars(utf8, chars);
            return Intern(chars[..n]);
        }
        finally
        {
            if (rented is not null)
                ArrayPool<char>.Shared.Return(rented);
        }
    }
}
