#!/usr/bin/env bash
# Quick start: the main job. Installs missing Debian packages, builds, and
# trains a small MLP on the CPU, printing loss, step time and peak memory.
set -euo pipefail
cd "$(dirname "$0")/.."
CMAKE_ARGS="${CMAKE_ARGS:-} -DREMAT_BUILD_TESTS=OFF" bash scripts/build.sh
BUILD_DIR=${BUILD_DIR:-build}
"$BUILD_DIR"/examples/train_mlp_demo "$@"
