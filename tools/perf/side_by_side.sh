#!/usr/bin/env bash
# Issue 19, item 3: the PyTorch reference loops and our BenchmarkDotNet classes on the same machine and threads, then the
# ratios. Run on a quiet machine (nothing else building); the load before each half is recorded.
#   tools/perf/side_by_side.sh [--quick]      (needs: apt-get install python3-torch libopenblas0-pthread)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out=${SIDE_BY_SIDE_OUT:-artifacts/side-by-side}
mkdir -p "$out"
threads=$(nproc)
quick=()
if [ "${1:-}" = "--quick" ]; then quick=(--quick); fi

echo "load before PyTorch: $(cat /proc/loadavg)"
/usr/bin/python3 tools/perf/side_by_side.py --threads "$threads" --out "$out/pytorch.json"

dotnet build -c Release benchmarks/WeightEnsemblingMoE.Benchmarks >/dev/null
echo "load before BenchmarkDotNet: $(cat /proc/loadavg)"
rm -rf "$out/bdn"
dotnet run -c Release --no-build --project "$root/benchmarks/WeightEnsemblingMoE.Benchmarks" -- \
  "${quick[@]}" --artifacts "$out/bdn" --filter '*MoeMlpBenchmarks*' '*UpscaledModelBenchmarks*'
echo "load after: $(cat /proc/loadavg)"

/usr/bin/python3 tools/perf/side_by_side.py --compare "$out/pytorch.json" --bdn "$out/bdn/results" | tee "$out/side-by-side.md"
