#!/usr/bin/env bash
# Installs the Debian packages remat needs, when any is missing. Sourced by the
# two quick-start scripts; safe to run again.
set -euo pipefail

# oneDNN's CMake package requires OpenCL (Debian builds it with the OpenCL GPU
# runtime), which libdnnl-dev only recommends: ocl-icd-opencl-dev. OpenMPI
# (libopenmpi-dev, and openmpi-bin for mpirun) serves remat::distributed and
# its tests.
REMAT_PACKAGES=(g++ make cmake ninja-build pkg-config libfmt-dev libgtest-dev libgmock-dev
  libbenchmark-dev libopenblas-openmp-dev libdnnl-dev ocl-icd-opencl-dev nlohmann-json3-dev
  libcli11-dev zlib1g-dev libopenmpi-dev openmpi-bin ${REMAT_EXTRA_PACKAGES:-})
# scripts/test.sh's sanitizer and fuzzing stages: Clang, its ASan/UBSan/libFuzzer
# runtimes (libclang-rt-14-dev) and its OpenMP (libomp-14-dev).
if [ "${REMAT_SANITIZERS:-0}" = 1 ]; then REMAT_PACKAGES+=(clang-14 libclang-rt-14-dev libomp-14-dev); fi

missing=()
for p in "${REMAT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "remat: installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
