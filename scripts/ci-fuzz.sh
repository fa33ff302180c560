#!/usr/bin/env bash
# CI's short fuzz budget (issue 17): every libFuzzer target of fuzz/ for SECONDS each (default 30) on its committed
# seed corpus, in the instrumented build scripts/ci-sanitize.sh made (clang, -DRALA_FUZZ=ON; configured here if
# missing). Prints one line per target (time, executions, crashes); exit status 0 only when no target found anything.
#   scripts/ci-fuzz.sh [SECONDS]
# A finding is kept in $BUILD/findings/TARGET/ with the log in $BUILD/fuzz-TARGET.log (see scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
export FUZZ_BUILD=${FUZZ_BUILD:-${SANITIZE_BUILD:-build-sanitize}}
export JOBS=${JOBS:-$(nproc)}
# A hang is a finding like any other. (FUZZ_HANGS_NOT_FATAL=TARGET reports a target's timeouts without failing: it
# was set for report_input while libhdf5's loop on corrupted variable-length strings was open; analysis/h5_vlen_check
# now refuses those files before libhdf5 reads them.)
export FUZZ_HANGS_NOT_FATAL=${FUZZ_HANGS_NOT_FATAL-}
# A fixed seed (FUZZ_SEED=0: a random one): from a clean clone's corpus the mutations are then the same sequence in
# every CI run, so a run here that went further than CI's budget and found nothing predicts CI; new ground is for
# scripts/fuzz.sh without a seed.
export FUZZ_SEED=${FUZZ_SEED-20261129}
start=$SECONDS
status=0
scripts/fuzz.sh all "$seconds" || status=$?
echo "ci-fuzz: $((SECONDS - start)) s for $(scripts/fuzz.sh list | wc -l) targets at ${seconds} s each"
exit $status
