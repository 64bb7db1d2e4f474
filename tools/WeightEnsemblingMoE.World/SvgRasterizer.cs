using System.Runtime.InteropServices;
using System.Text;

namespace WeightEnsembling.World;

/// <summary>
/// Renders SVG documents with librsvg (Debian's <c>librsvg2-2</c>, GNOME's SVG renderer) onto a cairo image surface.
/// Svg.Skia, the renderer the issue names, cannot run in this process: the only version on the feed (5.2.3) depends on
/// SkiaSharp ≥ 4.148.0 while the library and its tests are pinned to SkiaSharp 3.119.4 (NU1605 downgrade error when
/// both are referenced; docs/datasets.md). librsvg is called through a handful of its C functions and cairo's.
/// </summary>
public static unsafe partial class SvgRasterizer
{
    private const string Rsvg = "librsvg-2.so.2";
    private const string Cairo = "libcairo.so.2";
    private const string GObject = "libgobject-2.0.so.0";
    private const string GLib = "libglib-2.0.so.0";
    private const int CairoFormatArgb32 = 0;
    private static readonly Lazy<bool> Available = new(() => NativeLibrary.TryLoad(Rsvg, out _) && NativeLibrary.TryLoad(Cairo, out _));

    /// <summary>
    /// Draws <paramref name="svg"/> into a <paramref name="size"/>×<paramref name="size"/> RGB image filled with
    /// <paramref name="background"/>, the document fitted (aspect kept) into the viewport rectangle (x, y, w, h) in pixels.
    /// </summary>
    /// <returns>Packed RGB bytes, row-major.</returns>
    /// <exception cref="InvalidDataException">librsvg cannot parse or render the document (its message is included).</exception>
    public static byte[] Render(string svg, int size, (byte R, byte G, byte B) background, (double X, double Y, double Width, double Height) viewport, string source)
    {
        ArgumentNullException.ThrowIfNull(svg);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(size);
        byte[] data = Encoding.UTF8.GetBytes(svg);
        if (!Available.Value)
        {
            throw new InvalidOperationException($"Rendering {source} needs Debian's librsvg2-2 and libcairo2 ({Rsvg}, {Cairo} not found): apt-get install -y librsvg2-2.");
        }

        IntPtr surface = cairo_image_surface_create(CairoFormatArgb32, size, size);
        IntPtr cr = cairo_create(surface);
        IntPtr handle = IntPtr.Zero;
        try
        {
            cairo_set_source_rgb(cr, background.R / 255.0, background.G / 255.0, background.B / 255.0);
            cairo_paint(cr);
            IntPtr error = IntPtr.Zero;
            fixed (byte* bytes = data)
            {
                handle = rsvg_handle_new_from_data(bytes, (nuint)data.Length, &error);
            }

            ThrowOnError(handle == IntPtr.Zero, error, source, "parse");
            var rect = new RsvgRectangle { X = viewport.X, Y = viewport.Y, Width = viewport.Width, Height = viewport.Height };
            error = IntPtr.Zero;
            int ok = rsvg_handle_render_document(handle, cr, &rect, &error);
            ThrowOnError(ok == 0, error, source, "render");
            cairo_surface_flush(surface);
            byte* pixels = cairo_image_surface_get_data(surface);
            int stride = cairo_image_surface_get_stride(surface);
            var rgb = new byte[size * size * 3];
            for (int y = 0; y < size; y++)
            {
                byte* row = pixels + (y * stride);
                for (int x = 0; x < size; x++)
                {
                    // cairo's ARGB32 is a native-endian 32-bit word: B, G, R, A in memory on little-endian machines.
                    // The background is opaque, so the premultiplied values are the colours.
                    int o = ((y * size) + x) * 3;
                    rgb[o] = row[(x * 4) + 2];
                    rgb[o + 1] = row[(x * 4) + 1];
                    rgb[o + 2] = row[x * 4];
                }
            }

            return rgb;
        }
        finally
        {
            if (handle != IntPtr.Zero)
            {
                g_object_unref(handle);
            }

            cairo_destroy(cr);
            cairo_surface_destroy(surface);
        }
    }

    private static void ThrowOnError(bool failed, IntPtr error, string source, string what)
    {
        if (!failed)
        {
            return;
        }

        string message = "unknown error";
        if (error != IntPtr.Zero)
        {
            // GError: { GQuark domain; gint code; gchar *message; }
            message = Marshal.PtrToStringUTF8(Marshal.ReadIntPtr(error, 8)) ?? message;
            g_error_free(error);
        }

        throw new InvalidDataException($"librsvg could not {what} the SVG of {source}: {message}");
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct RsvgRectangle
    {
        public double X;
        public double Y;
        public double Width;
        public double Height;
    }

    [LibraryImport(Rsvg)]
    private static partial IntPtr rsvg_handle_new_from_data(byte* data, nuint length, IntPtr* error);

    [LibraryImport(Rsvg)]
    private static partial int rsvg_handle_render_document(IntPtr handle, IntPtr cr, RsvgRectangle* viewport, IntPtr* error);

    [LibraryImport(GObject)]
    private static partial void g_object_unref(IntPtr handle);

    [LibraryImport(GLib)]
    private static partial void g_error_free(IntPtr error);

    [LibraryImport(Cairo)]
    private static partial IntPtr cairo_image_surface_create(int format, int width, int height);

    [LibraryImport(Cairo)]
    private static partial IntPtr cairo_create(IntPtr surface);

    [LibraryImport(Cairo)]
    private static partial void cairo_set_source_rgb(IntPtr cr, double r, double g, double b);

    [LibraryImport(Cairo)]
    private static partial void cairo_paint(IntPtr cr);

    [LibraryImport(Cairo)]
    private static partial void cairo_surface_flush(IntPtr surface);

    [LibraryImport(Cairo)]
    private static partial byte* cairo_image_surface_get_data(IntPtr surface);

    [LibraryImport(Cairo)]
    private static partial int cairo_image_surface_get_stride(IntPtr surface);

    [LibraryImport(Cairo)]
    private static partial void cairo_destroy(IntPtr cr);

    [LibraryImport(Cairo)]
    private static partial void cairo_surface_destroy(IntPtr surface);
}
