#!/usr/bin/env bash
# Reproduces docs/benchmarks.md on this machine's CPU: builds remat, runs every
# bench_checkpoint preset and the same models in PyTorch >= 2 where it can
# (torch.utils.checkpoint, use_reentrant=False; F.scaled_dot_product_attention
# beside remat's fused attention) from the same weights, compares them, runs
# bench_allocator and draws the plots. On the CPU it first compares the per-op
# host overhead: bench_ops' Tiny cases, the same in PyTorch from Python
# (bench_overhead.py) and from C++ (libtorch, bench_overhead_libtorch.cpp), one
# thread each.
#
#   bash scripts/bench.sh                 # everything (about an hour on 2 cores)
#   PRESETS="deep-mlp resnet" bash scripts/bench.sh
#   OVERHEAD=only bash scripts/bench.sh   # host overhead only (a minute + build)
#
# Environment: OUT (results, default bench-results/<device>), PRESETS (default
# "deep-mlp resnet wide long-seq"), DEVICE (cpu or cuda; scripts/gpu.sh bench
# runs the CUDA side on a lent GPU), THREADS (OpenMP and PyTorch threads,
# default: all cores), PLOTS (where the PNGs go, default docs/img/<device>),
# PYTHON (default /usr/bin/python3: Debian's, with PyTorch 1.13 and matplotlib;
# it plots, compares and runs bench_overhead.py), TORCH_VENV (the virtual
# environment whose PyTorch >= 2 runs bench_checkpoint.py, default bench-venv/
# under the repository; without one there $PYTHON runs it if its torch is >= 2,
# as under scripts/gpu.sh, else a missing TORCH_VENV is made with `python3 -m
# venv` and `pip install torch numpy`, about 5 GB; failing that $PYTHON runs it
# with a warning, and PyTorch 1.13 skips the SDPA, selective and nested runs),
# SKIP_BUILD=1 (use the existing build/), WARMUP and STEPS (passed to both
# tools; default theirs: 2 warm-up and 3 timed steps), OVERHEAD (1: run the
# host-overhead step, the default on the CPU; 0: skip it; only: run only it).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cpu}
OUT=${OUT:-bench-results/$DEVICE}
PLOTS=${PLOTS:-docs/img/$DEVICE}
PRESETS=${PRESETS:-deep-mlp resnet wide long-seq}
PYTHON=${PYTHON:-/usr/bin/python3}
TORCH_VENV=${TORCH_VENV:-bench-venv}
THREADS=${THREADS:-$(nproc)}
BUILD_DIR=${BUILD_DIR:-build}
OVERHEAD=${OVERHEAD:-$([[ $DEVICE == cpu ]] && echo 1 || echo 0)}
export OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=passive

if [[ $DEVICE == cpu ]]; then
  # Debian's PyTorch and matplotlib, the host-overhead anchor (and the
  # checkpoint anchor's fallback) and the plotter; its libtorch for the C++
  # side of the host-overhead step.
  need=()
  "$PYTHON" -c 'import torch' 2>/dev/null || need+=(python3-torch)
  [[ $OVERHEAD == only ]] || "$PYTHON" -c 'import matplotlib' 2>/dev/null ||
    need+=(python3-matplotlib)
  [[ $OVERHEAD == 0 || -f /usr/include/torch/csrc/api/include/torch/torch.h ]] ||
    need+=(libtorch-dev)
  if ((${#need[@]})); then
    SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}"
  fi
fi
# The checkpoint anchor's interpreter (see TORCH_VENV above).
has_torch2() {
  "$1" -c 'import sys, numpy, torch; sys.exit(int(torch.__version__.split(".")[0]) < 2)' 2>/dev/null
}
make_venv() {
  echo "== creating $TORCH_VENV: pip install torch numpy (about 5 GB)"
  # A failed attempt leaves no half-made environment to be found next time.
  python3 -m venv "$TORCH_VENV" && "$TORCH_VENV/bin/pip" install -q torch numpy ||
    { rm -rf "$TORCH_VENV"; return 1; }
}
TORCH_PYTHON=$PYTHON
if [[ $OVERHEAD != only ]]; then
  if has_torch2 "$TORCH_VENV/bin/python"; then
    TORCH_PYTHON=$TORCH_VENV/bin/python
  elif has_torch2 "$PYTHON"; then
    :
  elif [[ ! -e $TORCH_VENV ]] && make_venv && has_torch2 "$TORCH_VENV/bin/python"; then
    TORCH_PYTHON=$TORCH_VENV/bin/python
  else
    echo "warning: neither $TORCH_VENV (made if missing) nor $PYTHON has PyTorch >= 2 and numpy:" \
      "the PyTorch side runs $PYTHON's $("$PYTHON" -c 'import torch; print(torch.__version__)')," \
      "which skips what needs a newer PyTorch (SDPA, selective, nested)" >&2
  fi
  echo "== PyTorch anchor: $TORCH_PYTHON ($("$TORCH_PYTHON" -c 'import torch; print(torch.__version__)'))"
fi
[[ ${SKIP_BUILD:-0} == 1 ]] || BUILD_DIR=$BUILD_DIR bash scripts/build.sh
mkdir -p "$OUT" "$PLOTS"

if [[ $OVERHEAD != 0 ]]; then
  # Per-op host overhead (docs/benchmarks.md), one thread on every side.
  echo "== overhead: remat, PyTorch from Python, libtorch from C++"
  bash benchmarks/pytorch/build_libtorch_anchor.sh "$BUILD_DIR"
  OMP_NUM_THREADS=1 "$BUILD_DIR/benchmarks/bench_ops" --benchmark_filter=Tiny \
    --benchmark_repetitions=5 --benchmark_report_aggregates_only=true \
    --benchmark_out="$OUT/overhead-remat.json" --benchmark_out_format=json | tee "$OUT/overhead.txt"
  "$PYTHON" benchmarks/pytorch/bench_overhead.py --json "$OUT/overhead-pytorch.json" |
    tee -a "$OUT/overhead.txt"
  "$BUILD_DIR/bench_overhead_libtorch" --json "$OUT/overhead-libtorch.json" |
    tee -a "$OUT/overhead.txt"
  [[ $OVERHEAD != only ]] || { echo "results in $OUT"; exit 0; }
fi

step_args=()
[[ -z ${WARMUP:-} ]] || step_args+=(--warmup "$WARMUP")
[[ -z ${STEPS:-} ]] || step_args+=(--steps "$STEPS")
json_args=()
for preset in $PRESETS; do
  echo "== $preset: remat"
  "$BUILD_DIR/benchmarks/bench_checkpoint" --preset "$preset" --device "$DEVICE" "${step_args[@]}" \
    --json "$OUT/$preset.json" --csv "$OUT/$preset.csv" --timeline "$OUT/$preset-timeline.csv" \
    --save-state "$OUT/state"
  echo "== $preset: PyTorch"
  "$TORCH_PYTHON" benchmarks/pytorch/bench_checkpoint.py --preset "$preset" --device "$DEVICE" "${step_args[@]}" \
    --threads "$THREADS" --state-dir "$OUT/state" --json "$OUT/$preset-pytorch.json"
  "$PYTHON" benchmarks/pytorch/compare_checkpoint.py --markdown \
    "$OUT/$preset.json" "$OUT/$preset-pytorch.json" | tee "$OUT/$preset-compare.md"
  json_args+=(--remat "$OUT/$preset.json" --pytorch "$OUT/$preset-pytorch.json"
    --timeline "$OUT/$preset-timeline.csv")
done
rm -rf "$OUT/state"

echo "== allocator"
"$BUILD_DIR/benchmarks/bench_allocator" --device "$DEVICE" --plans none,block --json "$OUT/allocator.json" \
  | tee "$OUT/allocator.txt"

if "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
  "$PYTHON" benchmarks/plot_benchmarks.py --out "$PLOTS" "${json_args[@]}"
  echo "results in $OUT, plots in $PLOTS"
else
  echo "results in $OUT (no matplotlib for $PYTHON: draw the plots elsewhere with benchmarks/plot_benchmarks.py)"
fi
