#!/usr/bin/env bash
# The one list of system packages RALA Lab needs (Debian 12). Idempotent: installs only what is missing.
# Run as root (or with sudo available). Usage: scripts/install-deps.sh
set -euo pipefail

PACKAGES=(
  build-essential cmake
  libtorch-dev            # LibTorch 1.13.1 (CPU), find_package(Torch)
  libgloo-dev             # Gloo headers for c10d's ProcessGroupGloo (multi-process training; the library ships with libtorch)
  libeigen3-dev           # dense SVD oracle, BDCSVD
  libspectra-dev          # partial SVD (top-k singular values)
  libhdf5-dev hdf5-tools  # results files, h5dump
  libcli11-dev            # command line
  libgtest-dev            # tests
  libbenchmark-dev        # Google Benchmark
  libstb-dev              # image decoding
  libfmt-dev
  zlib1g-dev              # gzip IDX files (Fashion-MNIST)
  nlohmann-json3-dev      # safetensors headers, JSON sidecars
  libyaml-cpp-dev         # ablation grid files (rala ablate --grid)
  libsleef-dev            # SLEEF vector maths (exp, erf) of the fused AVX2/AVX-512 kernels, as in LibTorch
  libopenblas0-pthread    # optimised BLAS (reference BLAS is ~20x slower)
  liblapack-dev           # LAPACK link library (dgeqrf, dgesdd for the batched spectra)
  gnuplot-nox             # figures
  dataset-fashion-mnist   # training data that ships with the system
  clang libclang-rt-14-dev  # sanitizer + libFuzzer build (scripts/ci-sanitize.sh, ci-fuzz.sh, fuzz.sh): clang 14,
                            # its ASan/UBSan runtimes and libFuzzer (Debian ships libFuzzer for clang in libclang-rt-14-dev)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
