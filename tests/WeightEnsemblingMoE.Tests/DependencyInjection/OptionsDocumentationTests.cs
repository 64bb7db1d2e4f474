using System.Reflection;
using System.Text.RegularExpressions;
using System.Xml.Linq;
using WeightEnsembling.DependencyInjection;

namespace WeightEnsembling.Tests.DependencyInjection;

[TestFixture, NonParallelizable]
public sealed class OptionsDocumentationTests
{
    private static IEnumerable<Type> OptionsTypes() =>
        typeof(WeightEnsemblingMoEOptions).Assembly.GetExportedTypes().Where(t => t.Name.EndsWith("Options", StringComparison.Ordinal));

    [Test]
    public void EveryOptionsClass_IsSealedWithAPublicConstructorAndSettableProperties()
    {
        Assert.That(OptionsTypes().Count(), Is.GreaterThanOrEqualTo(8));
        foreach (var type in OptionsTypes())
        {
            Assert.That(type.IsSealed && type.GetConstructor(Type.EmptyTypes) is not null, Is.True, type.Name);
            foreach (var property in type.GetProperties(BindingFlags.Public | BindingFlags.Instance))
            {
                Assert.That(property.SetMethod?.IsPublic, Is.True, $"{type.Name}.{property.Name}");
            }
        }
    }

    [Test]
    public void EveryOption_DocumentsItsDefaultValue()
    {
        string xmlPath = Path.ChangeExtension(typeof(WeightEnsemblingMoEOptions).Assembly.Location, ".xml");
        var members = XDocument.Load(xmlPath).Descendants("member")
            .ToDictionary(m => (string)m.Attribute("name")!, m => Regex.Replace(m.Value, @"\s+", " "));
        var undocumented = OptionsTypes()
            .SelectMany(t => t.GetProperties(BindingFlags.Public | BindingFlags.Instance).Select(p => $"P:{t.FullName}.{p.Name}"))
            .Where(id => !members.TryGetValue(id, out var text) || !text.Contains("The default value is", StringComparison.Ordinal))
            .ToList();
        Assert.That(undocumented, Is.Empty);
    }
}
