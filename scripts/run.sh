#!/usr/bin/env bash
# Quick start: the main job. Installs missing Debian packages (the fortunes
# corpus and Fashion-MNIST among them), builds, then trains the character
# transformer briefly twice, without and with a checkpoint per block, and
# prints step time and peak memory side by side. Arguments go to the
# transformer example (scripts/run.sh --help lists them).
set -euo pipefail
cd "$(dirname "$0")/.."
REMAT_EXTRA_PACKAGES="${REMAT_EXTRA_PACKAGES:-} fortunes dataset-fashion-mnist" \
  CMAKE_ARGS="${CMAKE_ARGS:-} -DREMAT_BUILD_TESTS=OFF -DREMAT_BUILD_BENCHMARKS=OFF" \
  bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
# Idle OpenMP workers sleep instead of spinning: on a small shared machine a
# spinning pool steals the cores BLAS needs.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
"$BUILD_DIR"/examples/transformer --compare none,block --steps 30 --metrics main_job_metrics.json "$@"
