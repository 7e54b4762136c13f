namespace Kmem.Tracing;

/// <summary>
/// The seam between the trace parser and GFP text decoding (<c>GFP_KERNEL|__GFP_ZERO</c> → <see cref="Gfp"/>).
/// The parser calls it once per distinct gfp_flags text (results are cached by string id), so its speed does
/// not matter; the raw text also stays available through <see cref="TraceEvent.GfpTextId"/>.
/// </summary>
internal static class GfpText
{
    /// <summary>Decodes <paramref name="text"/> as ftrace prints it. False if it is not valid GFP text.</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out Gfp gfp) => GfpFormat.TryParse(text, out gfp);
}
