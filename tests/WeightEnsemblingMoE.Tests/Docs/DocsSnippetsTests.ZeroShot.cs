using DocsSnippets;
using WeightEnsembling.Tests.Clip;
using static TorchSharp.torch;

namespace WeightEnsembling.Tests.Docs;

public sealed partial class DocsSnippetsTests
{
    [Test]
    public void ZeroShotSnippet_OnTinyClipFolderWithTokenizer_ClassifiesIntoThreeClasses()
    {
        // A CLIPModel folder with its tokenizer files, as on the Hub: the tiny clip_zeroshot model + the tokenizer fixture.
        string folder = Directory.CreateTempSubdirectory("wemoe-zeroshot-docs").FullName;
        try
        {
            foreach (string file in Directory.GetFiles(ClipModelTests.Fixture("clip_zeroshot"))
                .Concat(Directory.GetFiles(Path.Combine(TestContext.CurrentContext.TestDirectory, "Fixtures", "Text", "clip_tokenizer", "slow"))))
            {
                File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
            }

            using var pixels = randn(2, 3, 12, 12);
            var (head, logits) = ZeroShotSnippets.ClassifyByClassNames(folder, pixels);
            using (head)
            using (logits)
            {
                Assert.That(head.ClassNames, Is.EqualTo(new[] { "airplane", "automobile", "bird" }));
                Assert.That(logits.shape, Is.EqualTo(new long[] { 2, 3 }));
                Assert.That(logits.isfinite().all().item<bool>(), Is.True);
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
