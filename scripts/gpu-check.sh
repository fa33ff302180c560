#!/usr/bin/env bash
# GPU check of RALA Lab, for a machine with an NVIDIA GPU and a CUDA build of PyTorch (LibTorch 2.x from the PyTorch
# distribution: python3 -c 'import torch; print(torch.utils.cmake_prefix_path)'), possibly without a package registry.
#
#   scripts/gpu-check.sh [BUILD_DIR]          (default build-gpu)
#
# 1. Configures the project against that LibTorch (CMAKE_PREFIX_PATH) with -DRALA_STRICT_API=ON, NCCL's headers from
#    pip's nvidia-nccl package when present. The Debian packages the build needs (Eigen, Spectra, HDF5, CLI11,
#    GoogleTest, Google Benchmark, stb, fmt, nlohmann-json, OpenBLAS/LAPACK, zlib) are used from the system when
#    installed; otherwise set RALA_DEBS=DIR to a folder of their .deb files (apt-get download … on a Debian 12 machine,
#    see scripts/install-deps.sh): each is unpacked with dpkg -x into BUILD_DIR/prefix, which is put on the paths.
# 2. Builds rala and the device tests, runs them: every attention variant (forward, backward, probes), the models and
#    the rank analysis with --device cuda against the CPU (fp32, TF32 off, ≤ 1e-4 relative).
# 3. Runs `rala --device cuda bench` (RAVLT-T inference, 224²) and a 2-process data-parallel training step on NCCL when
#    the machine has 2 GPUs.
# 4. Prints one summary: GPU, LibTorch, test results, bench numbers.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-$root/build-gpu}"
mkdir -p "$build"
log="$build/gpu-check.log"
: > "$log"
say() { echo "gpu-check: $*" | tee -a "$log"; }
die() { say "error: $*"; exit 1; }

command -v nvidia-smi >/dev/null || die "nvidia-smi not found: this script needs a machine with an NVIDIA GPU"
py="${PYTHON:-python3}"
torch_prefix=$("$py" -c 'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null) ||
  die "$py cannot import torch (set PYTHON to a python3 with a CUDA build of PyTorch)"
torch_desc=$("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "available", torch.cuda.is_available())')
say "PyTorch $torch_desc, LibTorch at $torch_prefix"
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)
say "GPU: $gpu"

prefix_path="$torch_prefix"
if [ -n "${RALA_DEBS:-}" ]; then
  [ -d "$RALA_DEBS" ] || die "RALA_DEBS=$RALA_DEBS is not a folder of .deb files"
  pre="$build/prefix"
  mkdir -p "$pre"
  for deb in "$RALA_DEBS"/*.deb; do dpkg -x "$deb" "$pre" || die "cannot unpack $deb"; done
  prefix_path="$prefix_path;$pre/usr;$pre/usr/lib/x86_64-linux-gnu/cmake;$pre/usr/share/spectra/cmake"
  export CPATH="$pre/usr/include:$pre/usr/include/hdf5/serial:$pre/usr/include/eigen3${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$pre/usr/lib/x86_64-linux-gnu:$pre/usr/lib/x86_64-linux-gnu/hdf5/serial${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export LD_LIBRARY_PATH="$LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  say "Debian packages unpacked into $pre"
fi
nccl_inc=$("$py" -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "include"))' 2>/dev/null || true)
extra=()
[ -n "$nccl_inc" ] && [ -f "$nccl_inc/nccl.h" ] && extra+=("-DRALA_NCCL_INCLUDE_DIR=$nccl_inc")
# pip's torch links the pre-C++11 ABI on some releases: find_package(Torch) sets it through TORCH_CXX_FLAGS, and the
# Debian C++ libraries (HDF5, fmt) would then not link; report it clearly rather than failing at link time.
abi=$("$py" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))' 2>/dev/null || echo 1)
[ "$abi" = "1" ] || say "warning: this PyTorch uses the pre-C++11 ABI; C++ libraries built by Debian may not link"

jobs=$(nproc)
say "configuring in $build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$prefix_path" -DRALA_STRICT_API=ON \
  -DRALA_BUILD_BENCHMARKS=OFF "${extra[@]}" >>"$log" 2>&1 || die "cmake failed (see $log)"
grep "RALA Lab: LibTorch" "$log" | tail -1 | sed 's/^-- /gpu-check: /'
say "building rala and the device tests (-j$jobs)"
cmake --build "$build" -j"$jobs" --target rala rala_tests_device >>"$log" 2>&1 || die "build failed (see $log)"

"$build/rala" info --device cuda 2>&1 | grep -E "^(LibTorch|devices)" | tee -a "$log"
say "device tests (CUDA vs CPU parity)"
"$build/rala_tests_device" --gtest_brief=1 >"$build/device-tests.txt" 2>&1
tests_rc=$?
cat "$build/device-tests.txt" >>"$log"
tests_line=$(grep -E "^\[  (PASSED|FAILED|SKIPPED) " "$build/device-tests.txt" | tr '\n' ' ')

say "rala --device cuda bench (ravlt_t, 224², batch 32)"
"$build/rala" --device cuda bench --model ravlt_t --batch-size 32 --image-size 224 --warmup 3 --iters 10 --rounds 2 \
  --out "$build/bench-gpu.h5" >"$build/bench.txt" 2>&1
bench_rc=$?
cat "$build/bench.txt" | tee -a "$log"

ddp="not run (fewer than 2 GPUs)"
if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
  say "2-process data-parallel training on NCCL"
  port=$((20000 + RANDOM % 20000))
  run_dir="$build/ddp-run"
  rm -rf "$run_dir"
  pids=()
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
      "$build/rala" --device cuda train --model ravlt_micro --data synthetic --train-limit 512 --test-limit 128 \
      --epochs 1 --batch-size 64 --out "$run_dir" --dist-timeout 120 >"$build/ddp-rank$r.txt" 2>&1 &
    pids+=($!)
  done
  ddp_rc=0
  for p in "${pids[@]}"; do wait "$p" || ddp_rc=1; done
  cat "$build/ddp-rank0.txt" >>"$log"
  ddp=$([ $ddp_rc -eq 0 ] && grep -E "images/s" "$build/ddp-rank0.txt" | tail -1 || echo "FAILED (see $build/ddp-rank*.txt)")
fi

echo
echo "==================== RALA Lab GPU check ===================="
echo "GPU:          $gpu"
echo "PyTorch:      $torch_desc"
echo "device tests: $([ $tests_rc -eq 0 ] && echo ok || echo FAILED) — $tests_line"
echo "bench:        $([ $bench_rc -eq 0 ] && echo ok || echo FAILED) ($build/bench.txt)"
grep -E "^\|" "$build/bench.txt" | head -8
echo "NCCL 2-proc:  $ddp"
echo "log:          $log"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ]
