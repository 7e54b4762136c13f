namespace Kmem.Tracing;

/// <summary>
/// The seam between the trace parser and GFP text decoding (<c>GFP_KERNEL|__GFP_ZERO</c> → <see cref="Gfp"/>).
/// The reader calls it once per distinct gfp_flags text (results are cached by string id), so its speed does
/// not matter. TEMPORARY: until <c>GfpFormat</c> lands on main this only knows <c>none</c> and numeric values;
/// every other text decodes to <see cref="Gfp.None"/> with <c>known = false</c>, and the raw text stays available
/// through <see cref="TraceEvent.GfpTextId"/>.
/// </summary>
internal static class GfpText
{
    /// <summary>Decodes <paramref name="text"/>. False if it is not valid GFP text.</summary>
    /// <param name="text">The gfp_flags value as printed.</param>
    /// <param name="gfp">The decoded flags.</param>
    /// <param name="known">False when the decoder could not interpret the names (see the class remark).</param>
    public static bool TryParse(ReadOnlySpan<char> text, out Gfp gfp, out bool known)
    {
        gfp = Gfp.None;
        known = true;
        if (text.SequenceEqual("none"))
            return true;
        if (text.StartsWith("0x") && uint.TryParse(text[2..], System.Globalization.NumberStyles.AllowHexSpecifier,
                System.Globalization.CultureInfo.InvariantCulture, out uint raw))
        {
            gfp = (Gfp)raw;
            return true;
        }
        // Syntax check only: names of capitals, digits and '_' joined by '|'.
        foreach (char c in text)
        {
            if (!(c is (>= 'A' and <= 'Z') or (>= '0' and <= '9') or '_' or '|'))
                return false;
        }
        known = false;
        return text.Length > 0;
    }
}
