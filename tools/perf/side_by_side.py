#!/usr/bin/env python3
"""Per-sample WEMoE next to the PyTorch reference implementations, on the same machine and threads (issue 19, item 3).

Measures, in Debian's PyTorch 1.13 (CPU), at ViT-B/32 sizes (D = 768, MLP 3072, N = 50 tokens, T = 8 experts):

  mlp/dense             the plain CLIP MLP (the baseline our benchmark also uses)
  mlp/fusionbench       FusionBench's per-sample loop: for every sample, merge θ_0 + Σ_t r_t τ_t parameter by parameter
                        (task vectors kept as T separate modules) and run the MLP with functional_call
  mlp/dictmoe           the original repository's DictMoE loop: the same per-sample functional_call, with the merge done
                        as one weighted sum over the stacked expert deltas per parameter
  mlp/batched           a batched formula: W_b = W + einsum(r, τ) for all samples at once, then bmm
  model/dense           a dense ViT-B/32 forward (random weights, 224×224 input)
  model/fusionbench     the same ViT-B/32 with every MLP replaced by FusionBench's per-sample module (2-layer router)

Each is timed with torch.set_num_threads(threads), after warm-ups, as the median of --repeats runs; no_grad, float32.
The router and task vectors are random: speed does not depend on their values.

Usage:
  /usr/bin/python3 tools/perf/side_by_side.py --out pytorch.json [--batches 16 32] [--threads 2] [--repeats 5]
  /usr/bin/python3 tools/perf/side_by_side.py --compare pytorch.json --bdn BenchmarkDotNet.Artifacts/results
tools/perf/side_by_side.sh runs both halves and our BenchmarkDotNet classes in one go (docs/benchmarks.md).
"""
import argparse
import csv
import glob
import json
import math
import os
import platform
import statistics
import sys
import time

D, HIDDEN, TOKENS, T = 768, 3072, 50, 8


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def build_modules():
    class ClipMlp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(D, HIDDEN)
            self.fc2 = torch.nn.Linear(HIDDEN, D)

        def forward(self, x):
            return self.fc2(quick_gelu(self.fc1(x)))

    class Gate(torch.nn.Module):
        # FusionBench's 2-layer gate: Linear(D, D) → ReLU → Linear(D, T).
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(D, D)
            self.fc2 = torch.nn.Linear(D, T)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    class FusionBenchMoE(torch.nn.Module):
        """Per-sample weight ensembling as FusionBench's WeightEnsemblingMoE runs it without batch reduction."""

        def __init__(self, base, stacked):
            super().__init__()
            self.gate = Gate()
            self.base_model = base
            self.task_vectors = torch.nn.ModuleList()
            for t in range(T):
                tv = ClipMlp()
                with torch.no_grad():
                    for name, p in tv.named_parameters():
                        p.copy_(stacked[name][t])
                self.task_vectors.append(tv)
            self.names = [n for n, _ in base.named_parameters()]

        def forward(self, x):
            weights = self.gate(x).mean(dim=1)  # [B, T]
            base = dict(self.base_model.named_parameters())
            tvs = [dict(tv.named_parameters()) for tv in self.task_vectors]
            outputs = []
            for i in range(x.shape[0]):
                merged = {}
                for name in self.names:
                    value = base[name]
                    for t in range(T):
                        value = value + weights[i, t] * tvs[t][name]
                    merged[name] = value
                outputs.append(functional_call(self.base_model, merged, (x[i:i + 1],)))
            return torch.cat(outputs, dim=0)

    class DictMoE(torch.nn.Module):
        """The original repository's loop: per sample, one weighted sum over the stacked deltas per parameter."""

        def __init__(self, base, stacked):
            super().__init__()
            self.gate = Gate()
            self.base_model = base
            self.stacked = {k: v.clone() for k, v in stacked.items()}

        def forward(self, x):
            weights = self.gate(x).mean(dim=1)
            base = dict(self.base_model.named_parameters())
            outputs = []
            for i in range(x.shape[0]):
                merged = {k: base[k] + torch.tensordot(weights[i], self.stacked[k], dims=1) for k in base}
                outputs.append(functional_call(self.base_model, merged, (x[i:i + 1],)))
            return torch.cat(outputs, dim=0)

    class BatchedMoE(torch.nn.Module):
        """All samples at once: W_b = W + Σ_t r_bt τ_t as one matmul per parameter, then bmm."""

        def __init__(self, base, stacked):
            super().__init__()
            self.gate = Gate()
            self.base_model = base
            self.stacked = {k: v.reshape(T, -1).clone() for k, v in stacked.items()}
            self.shapes = {k: v.shape[1:] for k, v in stacked.items()}

        def forward(self, x):
            r = self.gate(x).mean(dim=1)
            p = dict(self.base_model.named_parameters())
            b = x.shape[0]

            def merged(name):
                return (p[name].reshape(1, -1) + r @ self.stacked[name]).view(b, *self.shapes[name])

            h = torch.baddbmm(merged("fc1.bias").unsqueeze(1), x, merged("fc1.weight").transpose(1, 2))
            h = quick_gelu(h)
            return torch.baddbmm(merged("fc2.bias").unsqueeze(1), h, merged("fc2.weight").transpose(1, 2))

    return ClipMlp, FusionBenchMoE, DictMoE, BatchedMoE


def timed(fn, repeats, warmups=2):
    for _ in range(warmups):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000.0, samples


def measure(args):
    ClipMlp, FusionBenchMoE, DictMoE, BatchedMoE = build_modules()
    torch.manual_seed(0)
    base = ClipMlp().eval()
    stacked = {n: torch.randn(T, *p.shape) * 1e-3 for n, p in base.named_parameters()}
    results = []

    def record(name, batch, fn):
        median, samples = timed(fn, args.repeats)
        results.append(dict(name=name, batch=batch, median_ms=median, samples_ms=[s * 1000.0 for s in samples]))
        print(f"{name:22s} B={batch:3d}  {median:10.2f} ms", flush=True)

    with torch.no_grad():
        # The three per-sample formulas compute the same function: check it once (same gate, float32, 1e-4).
        x = torch.randn(3, TOKENS, D)
        modules = [cls(base, stacked).eval() for cls in (FusionBenchMoE, DictMoE, BatchedMoE)]
        for module in modules[1:]:
            module.gate.load_state_dict(modules[0].gate.state_dict())
        outputs = [module(x) for module in modules]
        for label, output in zip(("dictmoe", "batched"), outputs[1:]):
            difference = (output - outputs[0]).abs().max().item()
            if not difference < 1e-4:
                sys.exit(f"{label} differs from the FusionBench loop by {difference}")
        del modules, outputs

        for batch in args.batches:
            x = torch.randn(batch, TOKENS, D)
            record("mlp/dense", batch, lambda: base(x))
            for label, cls in (("mlp/fusionbench", FusionBenchMoE), ("mlp/dictmoe", DictMoE), ("mlp/batched", BatchedMoE)):
                module = cls(base, stacked).eval()
                record(label, batch, lambda: module(x))
                del module

        if not args.skip_model:
            sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fixtures"))
            import clip_reference  # the repository's plain-PyTorch CLIP vision tower

            config = dict(hidden_size=D, intermediate_size=HIDDEN, num_hidden_layers=12, num_attention_heads=12,
                          image_size=224, patch_size=32, num_channels=3, layer_norm_eps=1e-5, projection_dim=512,
                          hidden_act="quick_gelu")
            model = clip_reference.VisionModelWithProjection(config).eval()
            batch = args.model_batch
            pixels = torch.randn(batch, 3, 224, 224)
            record("model/dense", batch, lambda: model(pixels))
            for layer in model.vision_model.encoder.layers:
                mlp = ClipMlp()
                mlp.load_state_dict({k.replace("mlp.", ""): v for k, v in layer.mlp.state_dict().items()})
                layer.mlp = FusionBenchMoE(mlp, {n: torch.randn(T, *p.shape) * 1e-3 for n, p in mlp.named_parameters()}).eval()
            record("model/fusionbench", batch, lambda: model(pixels))

    return results


def bdn_means(folder):
    """Mean (ms) per (method description, B) from BenchmarkDotNet's CSV reports."""
    means = {}
    for path in glob.glob(os.path.join(folder, "*-report.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                method = row.get("Method", "").strip("'\" ")
                batch = int(row["B"]) if row.get("B", "").strip().isdigit() else None
                mean = row.get("Mean", "")
                value, _, unit = mean.replace(",", "").partition(" ")
                try:
                    number = float(value)
                except ValueError:
                    continue
                scale = {"ns": 1e-6, "us": 1e-3, "μs": 1e-3, "ms": 1.0, "s": 1000.0}.get(unit.strip(), None)
                if scale is not None:
                    means[(method, batch)] = number * scale
    return means


def compare(args):
    with open(args.compare, encoding="utf-8") as handle:
        reference = json.load(handle)
    ours = bdn_means(args.bdn)
    if not ours:
        sys.exit(f"No BenchmarkDotNet CSV reports under {args.bdn}.")
    ref = {(r["name"], r["batch"]): r["median_ms"] for r in reference["results"]}
    rows = []
    for batch in sorted({b for (n, b) in ref if n.startswith("mlp/")}):
        mine = ours.get(("WEMoE per-sample, dense storage", batch))
        dense = ours.get(("dense MLP", batch))
        for name in ("mlp/fusionbench", "mlp/dictmoe", "mlp/batched", "mlp/dense"):
            if (name, batch) in ref and mine is not None:
                rows.append((f"WEMoE MLP per-sample (ours) vs {name}", batch, mine, ref[(name, batch)], mine / ref[(name, batch)]))
        if mine is not None and dense is not None:
            rows.append(("ours: WEMoE MLP / our dense MLP", batch, mine, dense, mine / dense))
    model_batch = reference.get("model_batch")
    mine_model = ours.get(("upscaled WEMoE ViT-B/32 forward, per-sample routing", None)) or ours.get(("upscaled WEMoE ViT-B/32 forward, per-sample routing", model_batch))
    for name in ("model/fusionbench", "model/dense"):
        if (name, model_batch) in ref and mine_model is not None:
            rows.append((f"upscaled ViT-B/32 (ours) vs {name}", model_batch, mine_model, ref[(name, model_batch)], mine_model / ref[(name, model_batch)]))
    print(f"threads: PyTorch {reference['threads']}; machine: {reference['machine']}; load before: {reference['load_before']}")
    print(f"| comparison | B | ours (ms) | reference (ms) | ours / reference |")
    print(f"| --- | ---: | ---: | ---: | ---: |")
    for label, batch, mine, theirs, ratio in rows:
        print(f"| {label} | {batch} | {mine:.2f} | {theirs:.2f} | {ratio:.3f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--model-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--out")
    parser.add_argument("--compare")
    parser.add_argument("--bdn", default="BenchmarkDotNet.Artifacts/results")
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    torch.set_num_threads(args.threads)
    with open("/proc/loadavg", encoding="utf-8") as handle:
        load_before = handle.read().split()[:3]
    results = measure(args)
    with open("/proc/loadavg", encoding="utf-8") as handle:
        load_after = handle.read().split()[:3]
    record = dict(torch=torch.__version__, threads=args.threads, machine=f"{platform.node()} {os.cpu_count()} cores",
                  load_before=load_before, load_after=load_after, model_batch=args.model_batch, results=results,
                  date=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
    print(json.dumps({k: v for k, v in record.items() if k != "results"}))


if __name__ == "__main__":
    import torch
    try:
        from torch.func import functional_call  # PyTorch ≥ 2.0, as FusionBench imports it
    except ImportError:
        from torch.nn.utils.stateless import functional_call  # PyTorch 1.13 (Debian 12)
    main()
