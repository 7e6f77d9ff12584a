#!/usr/bin/env bash
# Quick start: the whole test suite. Installs missing Debian packages,
# configures, builds, then runs every test through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
# Explicit ON: scripts/run.sh turns tests and benchmarks off in the same build tree.
CMAKE_ARGS="${CMAKE_ARGS:-} -DREMAT_BUILD_TESTS=ON -DREMAT_BUILD_BENCHMARKS=ON" bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
# ctest runs tests side by side: idle OpenMP workers must sleep, not spin, or
# they starve each other's parallel regions on a small machine.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir "$BUILD_DIR" --output-on-failure --parallel "${JOBS:-$(nproc)}" --timeout 1200
