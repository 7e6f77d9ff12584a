#!/usr/bin/env bash
# Quick start: the whole test suite. Installs missing Debian packages,
# configures, builds, then runs every test through ctest; then (unless
# REMAT_SANITIZERS=0) builds the `asan` preset with Clang, runs the suite again
# under AddressSanitizer + UndefinedBehaviorSanitizer, and runs each libFuzzer
# target for REMAT_FUZZ_SECONDS seconds (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
# deps.sh adds Clang and its runtimes for the sanitizer stages.
export REMAT_SANITIZERS=${REMAT_SANITIZERS:-1}
JOBS=${JOBS:-$(nproc)}

stage_start=$SECONDS
stage_done() {
  echo "remat: $1 took $((SECONDS - stage_start)) s"
  stage_start=$SECONDS
}

# Explicit ON: scripts/run.sh turns tests and benchmarks off in the same build tree.
CMAKE_ARGS="${CMAKE_ARGS:-} -DREMAT_BUILD_TESTS=ON -DREMAT_BUILD_BENCHMARKS=ON" bash scripts/build.sh
stage_done "build"
# ctest runs tests side by side: idle OpenMP workers must sleep, not spin, or
# they starve each other's parallel regions on a small machine.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --test-dir "${BUILD_DIR:-build}" --output-on-failure --parallel "$JOBS" --timeout 1200
stage_done "ctest"

if [ "$REMAT_SANITIZERS" = 0 ]; then exit 0; fi
cmake --preset asan
cmake --build --preset asan --parallel "$JOBS"
stage_done "asan build"
ctest --preset asan --parallel "$JOBS"
stage_done "asan ctest"

# Each target starts from its committed seeds; what it finds goes to a scratch
# corpus in the build tree, and a crash leaves its input beside it.
fuzz_seconds=${REMAT_FUZZ_SECONDS:-60}
if [ "$fuzz_seconds" = 0 ]; then exit 0; fi
for seeds in fuzz/corpus/*/; do
  name=$(basename "$seeds")
  work=build-asan/fuzz/run/$name
  mkdir -p "$work/corpus"
  echo "remat: fuzz_$name for $fuzz_seconds s"
  build-asan/fuzz/fuzz_"$name" -max_total_time="$fuzz_seconds" -print_final_stats=1 \
    -artifact_prefix="$work/" "$work/corpus" "$seeds"
done
stage_done "fuzzing"
