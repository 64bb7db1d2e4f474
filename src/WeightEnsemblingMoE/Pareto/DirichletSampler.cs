namespace WeightEnsembling.Pareto;

/// <summary>
/// Draws preferences from a symmetric Dirichlet(α) distribution with a seeded generator: normalised Gamma(α, 1) draws
/// (Marsaglia–Tsang; for α &lt; 1 the Gamma(α + 1) · U^{1/α} boost). The same seed gives the same sequence everywhere.
/// </summary>
internal sealed class DirichletSampler
{
    private readonly Random random;
    private readonly double alpha;
    private readonly int dimension;

    public DirichletSampler(int dimension, double alpha, int seed)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(dimension);
        if (!(alpha > 0) || double.IsInfinity(alpha))
        {
            throw new ArgumentOutOfRangeException(nameof(alpha), alpha, "The Dirichlet concentration α must be positive and finite.");
        }

        this.dimension = dimension;
        this.alpha = alpha;
        random = new Random(seed);
    }

    public double[] Sample()
    {
        var draw = new double[dimension];
        double sum = 0;
        while (!(sum > 0))
        {
            for (int i = 0; i < dimension; i++)
            {
                draw[i] = Gamma(alpha);
            }

            sum = draw.Sum();
        }

        for (int i = 0; i < dimension; i++)
        {
            draw[i] /= sum;
        }

        return draw;
    }

    private double Gamma(double shape)
    {
        if (shape < 1)
        {
            return Gamma(shape + 1) * Math.Pow(Uniform(), 1 / shape);
        }

        double d = shape - 1.0 / 3;
        double c = 1 / Math.Sqrt(9 * d);
        while (true)
        {
            double x;
            double v;
            do
            {
                x = Normal();
                v = 1 + c * x;
            }
            while (v <= 0);

            v = v * v * v;
            double u = Uniform();
            if (Math.Log(u) < 0.5 * x * x + d - d * v + d * Math.Log(v))
            {
                return d * v;
            }
        }
    }

    private double Uniform() => 1.0 - random.NextDouble(); // (0, 1]

    private double Normal() => Math.Sqrt(-2 * Math.Log(Uniform())) * Math.Cos(2 * Math.PI * random.NextDouble());
}
