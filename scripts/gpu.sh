#!/usr/bin/env bash
# Builds remat with CUDA and runs the whole test suite on a lent GPU machine
# (docs/gpu.md). That machine has nvcc, CMake, ninja and a PyTorch environment
# (cuDNN inside it) but no Debian -dev packages and no network, so the build
# dependencies travel with the working tree in build-deps/ (ignored by git as
# /build*/):
#
#   scripts/gpu.sh prepare   # here: fill build-deps/ from this machine's Debian packages
#   scripts/gpu.sh run       # there: build, then ctest (build + test)
#   scripts/gpu.sh build     # there: configure and build only
#   scripts/gpu.sh test      # there: ctest on an existing build
#
# build-deps/prefix mirrors /usr: headers and the relocatable CMake packages
# of fmt, nlohmann_json, CLI11, Google Benchmark and oneDNN (dnnl, with the
# OpenCL headers its package config requires). On the device it is
# copied into the build tree (<build>/_deps/prefix, so build-deps/ stays as
# prepared), with the libraries of build-deps/libs.tar.xz unpacked into it
# (libfmt, OpenBLAS with its Fortran runtime, zlib, libbenchmark, oneDNN and
# the OpenCL loader it links) and
# GoogleTest built from Debian's source and installed into it. CMake finds all
# of them through CMAKE_PREFIX_PATH, so no CMake option is needed.
#
# Environment: OUT (logs go to $OUT, else <build>/logs), GPU_BUILD_DIR
# (default build-gpu), CUDNN_ROOT (default: the nvidia/cudnn folder of
# python3's site-packages), CTEST_ARGS (extra ctest arguments, e.g. "-R Cuda"),
# JOBS (default: nproc).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS=$ROOT/build-deps
ARCH=x86_64-linux-gnu
BUILD_DIR=${GPU_BUILD_DIR:-build-gpu}
case $BUILD_DIR in /*) ;; *) BUILD_DIR=$ROOT/$BUILD_DIR ;; esac
JOBS=${JOBS:-$(nproc)}

# ---- here ------------------------------------------------------------------------

prepare() {
  # Debian's -dev packages are the source of every file below; libgtest-dev
  # pulls in the googletest source package.
  REMAT_EXTRA_PACKAGES="${REMAT_EXTRA_PACKAGES:-} googletest xz-utils" bash scripts/deps.sh
  local sys=/usr/lib/$ARCH PREFIX=$DEPS/prefix
  local LIBDIR=$PREFIX/lib/$ARCH
  rm -rf "$DEPS"
  mkdir -p "$PREFIX/include/openblas" "$LIBDIR/cmake" "$PREFIX/share/cmake"
  cp -r /usr/include/fmt /usr/include/nlohmann /usr/include/CLI /usr/include/benchmark \
    /usr/include/zlib.h /usr/include/zconf.h "$PREFIX/include/"
  cp /usr/include/$ARCH/openblas-openmp/*.h "$PREFIX/include/openblas/"
  cp -r /usr/include/oneapi /usr/include/dnnl*.h* /usr/include/CL "$PREFIX/include/"
  cp -r $sys/cmake/fmt $sys/cmake/benchmark $sys/cmake/dnnl "$LIBDIR/cmake/"
  cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$PREFIX/share/cmake/"
  cp -r /usr/src/googletest "$DEPS/googletest"
  # The libraries go packed (OpenBLAS alone is 36 MB, 5 MB in xz; oneDNN 40 MB,
  # 7 MB); symbolic links are made on the device, since links may not travel.
  tar -h -cJf "$DEPS/libs.tar.xz" -C $sys libfmt.so.9.1.0 libz.so.1 libgfortran.so.5 \
    libquadmath.so.0 libbenchmark.so.1.7.1 libbenchmark_main.a libdnnl.so.2.6 libOpenCL.so.1 \
    -C $sys/openblas-openmp libopenblas.so.0
  # The examples' data (the device has no Debian datasets): Fashion-MNIST as
  # shipped (gzip, 30 MB) and the fortunes corpus.
  mkdir -p "$DEPS/data"
  cp -r /usr/share/datasets/fashion-mnist "$DEPS/data/"
  cp -r /usr/share/games/fortunes "$DEPS/data/"
  du -sh "$DEPS"
  echo "build-deps/ is ready: carry it, e.g. run(command='bash scripts/gpu.sh run', carry=['build-deps'])"
}

# ---- there -------------------------------------------------------------------------

LOGS=${OUT:-$BUILD_DIR/logs}
PREFIX=$BUILD_DIR/_deps/prefix
LIBDIR=$PREFIX/lib/$ARCH

setup() {
  [ -d "$DEPS/googletest" ] || {
    echo "build-deps/ is missing: run 'scripts/gpu.sh prepare' here and carry build-deps" >&2
    exit 1
  }
  mkdir -p "$LOGS" "$BUILD_DIR/_deps"
  command -v nvcc > /dev/null || export PATH=/usr/local/cuda/bin:$PATH
  if [ ! -e "$LIBDIR/libopenblas.so" ]; then
    rm -rf "$PREFIX"
    cp -r "$DEPS/prefix" "$PREFIX"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
      "$DEPS/libs.tar.xz" "$LIBDIR"
    ln -sf libfmt.so.9.1.0 "$LIBDIR/libfmt.so.9"
    ln -sf libfmt.so.9 "$LIBDIR/libfmt.so"
    ln -sf libopenblas.so.0 "$LIBDIR/libopenblas.so"
    ln -sf libz.so.1 "$LIBDIR/libz.so"
    ln -sf libdnnl.so.2.6 "$LIBDIR/libdnnl.so.2"
    ln -sf libdnnl.so.2 "$LIBDIR/libdnnl.so"
    ln -sf libOpenCL.so.1 "$LIBDIR/libOpenCL.so"
    ln -sf libbenchmark.so.1.7.1 "$LIBDIR/libbenchmark.so.1debian"
    ln -sf libbenchmark.so.1debian "$LIBDIR/libbenchmark.so"
  fi
  if [ -z "${CUDNN_ROOT:-}" ]; then
    CUDNN_ROOT=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])')
  fi
  export CUDNN_ROOT
  # The environment variable reaches every CMake run, the install test's too.
  export CMAKE_PREFIX_PATH=$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
  export LD_LIBRARY_PATH=$LIBDIR:$CUDNN_ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  # Older config files (CLI11's) set policy versions CMake 4 refuses.
  export CMAKE_POLICY_VERSION_MINIMUM=3.5
  {
    echo "date: $(date -u +%FT%TZ)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    echo "nvcc: $(command -v nvcc)"; nvcc --version | tail -n 2
    echo "g++: $(g++ --version | head -n 1)"
    echo "cmake: $(cmake --version | head -n 1); ninja: $(ninja --version)"
    echo "python3: $(command -v python3)"
    echo "CUDNN_ROOT: $CUDNN_ROOT"; ls "$CUDNN_ROOT/include/cudnn.h" "$CUDNN_ROOT"/lib/libcudnn.so* || true
    ls "$(dirname "$(dirname "$(command -v nvcc)")")"/lib*/libcublas.so* || true
  } 2>&1 | tee "$LOGS/env.txt"
}

# Last lines of a log, after a failed step.
fail() {
  echo "---- $1 failed; last lines of $2:"
  tail -n 60 "$2"
  exit 1
}

gtest() {
  [ -d "$PREFIX/lib/cmake/GTest" ] && return
  local dir=$BUILD_DIR/_googletest
  { cmake -S "$DEPS/googletest" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_INSTALL_LIBDIR=lib &&
    cmake --build "$dir" --parallel "$JOBS" && cmake --install "$dir"; } > "$LOGS/googletest.log" 2>&1 ||
    fail "GoogleTest build" "$LOGS/googletest.log"
}

build() {
  gtest
  local start=$SECONDS
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DREMAT_BUILD_TESTS=ON -DREMAT_BUILD_EXAMPLES=ON -DREMAT_BUILD_BENCHMARKS=ON \
    -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DCUDNN_ROOT="$CUDNN_ROOT" \
    -DREMAT_BLAS_LIBRARY="$LIBDIR/libopenblas.so.0" -DREMAT_CBLAS_INCLUDE_DIR="$PREFIX/include/openblas" \
    -DZLIB_INCLUDE_DIR="$PREFIX/include" -DZLIB_LIBRARY="$LIBDIR/libz.so.1" \
    > "$LOGS/configure.log" 2>&1 || fail configure "$LOGS/configure.log"
  grep -E "^-- remat:" "$LOGS/configure.log" || true
  grep -q "remat: CUDA ON" "$LOGS/configure.log" || fail "CUDA detection" "$LOGS/configure.log"
  cmake --build "$BUILD_DIR" --parallel "$JOBS" > "$LOGS/build.log" 2>&1 || fail build "$LOGS/build.log"
  echo "built in $((SECONDS - start)) s; $(grep -c 'warning' "$LOGS/build.log" || true) warning lines (build.log)"
}

run_tests() {
  # ctest runs tests side by side: idle OpenMP workers must sleep, not spin.
  export OMP_WAIT_POLICY=passive OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
  local rc=0
  # shellcheck disable=SC2086 # CTEST_ARGS is a list of arguments
  ctest --test-dir "$BUILD_DIR" --output-on-failure --parallel "$JOBS" --timeout 300 \
    --output-junit "$LOGS/junit.xml" ${CTEST_ARGS:-} > "$LOGS/ctest.log" 2>&1 || rc=$?
  {
    echo "---- CUDA tests (test_cuda, test_cuda_ops):"
    grep -E "Test +#[0-9]+: (SimulatedStreams|Cuda|Registry/CudaOp)" "$LOGS/ctest.log" |
      awk '{ status = ($0 ~ /Passed/) ? "passed" : ($0 ~ /Skipped/) ? "skipped" : "failed"; n[status]++ }
           END { printf "%d passed, %d failed, %d skipped\n", n["passed"], n["failed"], n["skipped"] }'
    echo "---- ctest:"
    sed -n '/tests passed/,$p' "$LOGS/ctest.log"
  } | tee "$LOGS/summary.txt"
  return $rc
}

# The CUDA op benchmark and its PyTorch anchor, one after the other on the
# same GPU, and their ratios; then the checkpoint presets, bench_allocator and
# the PyTorch side by side through scripts/bench.sh (docs/benchmarks.md), and
# the offload and compression preset beside PyTorch's save_on_cpu (same
# weights and input).
bench() {
  "$BUILD_DIR/benchmarks/bench_cuda_ops" --json "$LOGS/bench_cuda_ops.json" 2>&1 | tee "$LOGS/bench.log"
  python3 "$ROOT/benchmarks/pytorch/bench_cuda_ops.py" --json "$LOGS/bench_cuda_ops_torch.json" 2>&1 |
    tee -a "$LOGS/bench.log"
  python3 "$ROOT/benchmarks/pytorch/compare_cuda_ops.py" "$LOGS/bench_cuda_ops.json" \
    "$LOGS/bench_cuda_ops_torch.json" 2>&1 | tee -a "$LOGS/bench.log"
  DEVICE=cuda SKIP_BUILD=1 BUILD_DIR="$BUILD_DIR" PYTHON=python3 OUT="$LOGS/checkpoint" \
    PLOTS="$LOGS/img" bash "$ROOT/scripts/bench.sh" 2>&1 | tee -a "$LOGS/bench.log"
  "$BUILD_DIR/benchmarks/bench_checkpoint" --preset offload --device cuda --steps 10 \
    --offload-budgets 0.3,0.5 --budgets 0.3,0.5 --save-state "$LOGS/checkpoint/offload-state" \
    --json "$LOGS/checkpoint/offload.json" --csv "$LOGS/checkpoint/offload.csv" 2>&1 |
    tee -a "$LOGS/bench.log"
  python3 "$ROOT/benchmarks/pytorch/bench_checkpoint.py" --preset offload --device cuda --steps 10 \
    --state-dir "$LOGS/checkpoint/offload-state" --json "$LOGS/checkpoint/offload-pytorch.json" 2>&1 |
    tee -a "$LOGS/bench.log"
  python3 "$ROOT/benchmarks/pytorch/compare_checkpoint.py" --markdown \
    "$LOGS/checkpoint/offload.json" "$LOGS/checkpoint/offload-pytorch.json" 2>&1 |
    tee "$LOGS/checkpoint/offload-compare.md" | tee -a "$LOGS/bench.log"
  rm -rf "$LOGS/checkpoint/offload-state"
}

# The three examples on the GPU, short runs with checkpointing on and off
# (the transformer's --compare prints both plans side by side), and the
# transformer under a memory limit (the eviction mode).
examples() {
  local bin=$BUILD_DIR/examples data=$DEPS/data
  {
    "$bin/transformer" --device cuda --quiet --steps 200 --corpus "$data/fortunes" \
      --compare none,block,selective,offload,compress-int8 --metrics "$LOGS/transformer_metrics.json"
    "$bin/transformer" --device cuda --quiet --steps 50 --corpus "$data/fortunes" \
      --memory-limit 128MiB --metrics "$LOGS/transformer_limit_metrics.json"
    "$bin/mlp" --device cuda --quiet --steps 300 --data "$data/fashion-mnist" \
      --checkpoint block --metrics "$LOGS/mlp_metrics.json"
    "$bin/resnet" --device cuda --quiet --steps 100 --data "$data/fashion-mnist" \
      --checkpoint block --metrics "$LOGS/resnet_metrics.json"
  } 2>&1 | tee "$LOGS/examples.log"
}

case "${1:-}" in
  prepare) prepare ;;
  examples) setup && examples ;;
  bench) setup && bench ;;
  build) setup && build ;;
  test) setup && run_tests ;;
  run) setup && build && run_tests ;;
  *)
    echo "usage: scripts/gpu.sh prepare|run|build|test|bench|examples (docs/gpu.md)" >&2
    exit 2
    ;;
esac
