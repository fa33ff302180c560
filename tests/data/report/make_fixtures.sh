#!/usr/bin/env bash
# Regenerates the fixtures of tests/data/report with the toolkit itself (run from the repository root, after
# `cmake --build BUILD --target rala rala_make_report_fixtures`):
#   tests/data/report/make_fixtures.sh [BUILD]          (default BUILD: build)
# - ravlt_micro_RRSS.h5, ravlt_micro_LLSS.h5: `rala rank` on 4 Fashion-MNIST test images at 64², random weights
#   (seed 0), probes kv_buffer, output, output_gated (the exact command is in each file's command_line attribute),
#   then `h5repack -l CONTI -f NONE` (contiguous, uncompressed: same content, but without the per-dataset chunk
#   indexes of the streaming layout, which make up 90 % of such a tiny file: 300 KB → 75 KB).
# - ablation.h5, bench.h5, train.h5 (+ .csv): written by tests/reports/make_table_fixtures.cpp through
#   analysis/results_table (the writer of `rala ablate`, `rala bench`, `rala train`) with those subcommands' column
#   names and units; the values are illustrative, typed into that program, not measurements.
set -euo pipefail
build=${1:-build}
out=tests/data/report
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$build/rala" --threads 1 rank --model ravlt_micro --attn-pattern RRSS --attn-pattern LLSS --data fashion-mnist \
  --num-images 4 --batch-size 4 --probes kv_buffer,output,output_gated --seed 0 --out "$tmp" --quiet
for p in RRSS LLSS; do
  rm -f "$out/ravlt_micro_$p.h5"
  h5repack -l CONTI -f NONE "$tmp/ravlt_micro_$p.h5" "$out/ravlt_micro_$p.h5"
done
"$build/rala_make_report_fixtures" "$out"
rm -f "$out"/ablation.csv "$out"/bench.csv "$out"/train.csv   # the report reads the .h5 files
du -ch "$out"/* | tail -1
