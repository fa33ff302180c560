#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (issue 17), as CI runs it after the Release suite.
#   scripts/ci-sanitize.sh            build $SANITIZE_BUILD (default build-sanitize) and run the CI subset under it
#   scripts/ci-sanitize.sh --all      every test (about three times the subset's run time; see the README)
#   scripts/ci-sanitize.sh --list     print the ctest regex of the subset and exit
# The build is clang with -DRALA_FUZZ=ON (which implies RALA_SANITIZE=ON), so that the same build directory then serves
# scripts/ci-fuzz.sh without a second instrumented build of the libraries. Without clang, -DRALA_SANITIZE=ON with GCC
# gives the same sanitizers (set SANITIZE_CXX=g++; ci-fuzz.sh then needs its own clang build).
# Exit status: ctest's (a sanitizer finding aborts its test: UB is fatal, leaks are reported at exit).
#
# The subset: every test that reads files made elsewhere or writes results (the readers the fuzzers also cover, the
# results and report paths, the rank, predict and info commands with their error paths; the Gram spectra's vector
# kernels, whose loads run to the padded edge of their buffers). Left out to keep CI under an
# hour: training, ablation and the kill -9 tests (minutes each under ASan; they run in the Release suite), and the
# numerical comparisons of attention_variants and the models against their goldens.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${SANITIZE_BUILD:-build-sanitize}
JOBS=${JOBS:-$(nproc)}
CXX_FOR_SANITIZE=${SANITIZE_CXX:-clang++}

# ctest -R regex of the CI subset (test names are GoogleTest's Suite.Name).
SUBSET='^(CheckpointTest|Safetensors|FashionMnist|DecodeImage|ImageFolder|Transforms|H5[A-Za-z]*|ResultsTable|Report[A-Za-z]*|Grid|RankCommand|InfoCommand|Predict|GramKernels|GramSpectra)\.'

mode=subset
case "${1:-}" in
  --all) mode=all ;;
  --list) echo "$SUBSET"; exit 0 ;;
  "") ;;
  *) echo "usage: scripts/ci-sanitize.sh [--all|--list]" >&2; exit 2 ;;
esac

start=$SECONDS
if [ ! -f "$BUILD/CMakeCache.txt" ]; then
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  if [ "$CXX_FOR_SANITIZE" = clang++ ]; then
    command -v clang++ >/dev/null || { echo "ci-sanitize: clang++ not found (scripts/install-deps.sh installs clang)" >&2; exit 1; }
    compiler=(-DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DRALA_FUZZ=ON)
  else
    compiler=(-DCMAKE_CXX_COMPILER="$CXX_FOR_SANITIZE" -DRALA_SANITIZE=ON)
  fi
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DRALA_BUILD_BENCHMARKS=OFF "${compiler[@]}" "${launcher[@]}" >/dev/null
fi
if [ $mode = all ]; then
  cmake --build "$BUILD" -j "$JOBS"
else
  # The test executables the subset runs (rala_tests_attention_variants and rala_tests_bench are not built).
  cmake --build "$BUILD" -j "$JOBS" --target rala rala_tests_models rala_tests_data rala_tests_analysis \
    rala_tests_experiments rala_tests_reports rala_tests_train
fi
echo "ci-sanitize: build $((SECONDS - start)) s"

# Leaks are findings; UB is fatal (the build uses -fno-sanitize-recover=all); one intra-op thread per test process
# (ctest runs $JOBS of them).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
t0=$SECONDS
status=0
if [ $mode = all ]; then
  (cd "$BUILD" && ctest --output-on-failure -j "$JOBS") || status=$?
else
  (cd "$BUILD" && ctest --output-on-failure -j "$JOBS" -R "$SUBSET") || status=$?
fi
echo "ci-sanitize: tests ($mode) $((SECONDS - t0)) s, total $((SECONDS - start)) s"
exit $status
