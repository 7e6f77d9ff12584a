#!/usr/bin/env bash
# Builds bench_overhead_libtorch (the libtorch C++ anchor of the per-op host
# overhead) into the given directory (default build/), against Debian's
# libtorch-dev, which it installs if missing. Not part of remat's CMake build:
# CI does not depend on libtorch.
#
#   bash benchmarks/pytorch/build_libtorch_anchor.sh [BUILD_DIR]
#   BUILD_DIR/bench_overhead_libtorch --json bench_overhead_libtorch.json
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD_DIR=${1:-build}
CXX=${CXX:-g++}
inc=/usr/include/torch/csrc/api/include
if [[ ! -f $inc/torch/torch.h || ! -e /usr/lib/x86_64-linux-gnu/libtorch.so ]]; then
  SUDO=$([[ $(id -u) == 0 ]] || echo sudo)
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libtorch-dev
fi
mkdir -p "$BUILD_DIR"
# libtorch 1.13's headers are C++17 and Debian builds it with the new
# libstdc++ ABI (TorchConfig.cmake's TORCH_CXX_FLAGS); -O2 as a release build.
"$CXX" -O2 -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 -isystem "$inc" \
  benchmarks/pytorch/bench_overhead_libtorch.cpp -o "$BUILD_DIR/bench_overhead_libtorch" \
  -ltorch -ltorch_cpu -lc10
echo "built $BUILD_DIR/bench_overhead_libtorch"
