namespace WeightEnsembling.World;

/// <summary>One pinned npm package: exact version and the registry's <c>dist.integrity</c> (SRI, sha512).</summary>
public sealed class NpmPackage
{
    /// <summary>The package name, e.g. <c>@iconify-json/tabler</c>.</summary>
    public string Name { get; set; } = "";

    /// <summary>The exact version, e.g. <c>1.2.41</c> (no ranges).</summary>
    public string Version { get; set; } = "";

    /// <summary>The tarball's Subresource Integrity string, <c>sha512-</c> and the base64 digest.</summary>
    public string Integrity { get; set; } = "";

    /// <summary>
    /// A local folder holding the unpacked package (its <c>package.json</c> inside), relative to the config file, used
    /// instead of the registry: the tests' committed slices. Null (the default) fetches the pinned tarball.
    /// </summary>
    public string? Path { get; set; }
}
