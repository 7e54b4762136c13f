using System.Runtime.CompilerServices;
using Kmem.Proc;

namespace Kmem.Vmalloc;

/// <summary>Registers /proc/vmallocinfo when the library loads, so <c>kmem proc</c> lists it before any machine boots.</summary>
internal static class VmallocViews
{
#pragma warning disable CA2255 // a library module initializer is the registration point the view registry asks for
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Register() => ProcViews.Register("vmallocinfo", m => m.Vmalloc.VmallocInfo());
}
