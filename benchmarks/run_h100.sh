#!/usr/bin/env bash
# H100 baseline + stability check in one device call: each bundled preset twice, the first run
# writes the baseline, the second is gated against it, then run-to-run agreement of the medians.
#   OUT=dir bash benchmarks/run_h100.sh [extra sparsecli bench flags]
set -u
FINAL=${OUT:-benchmarks/out}
OUT=$(mktemp -d)  # everything lands here, then one tarball + the baseline go to $FINAL (few files)
mkdir -p "$FINAL"
PY=${PY:-python3}  # the device image's python3 holds torch; its pip's scripts may not be on PATH
$PY -m pip install --no-deps --no-build-isolation -q -e . >"$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log"; exit 1; }
sparsecli() { $PY -c 'from sparsecli.cli import main; main()' "$@"; }
export COLUMNS=220
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv >"$OUT/gpu-before.csv" 2>&1
BASE="$OUT/baseline-h100.json"
PRESETS=${PRESETS:-"fixed bigbird"}
for run in 1 2; do
  for p in $PRESETS; do
    if [ "$run" = 1 ]; then gate=(--baseline "$BASE" --update-baseline); else gate=(--baseline "$BASE"); fi
    if [ "$SECONDS" -gt "${STOP_AFTER_S:-430}" ]; then echo "run $run $p: skipped, out of time"; continue; fi
    start=$SECONDS
    sparsecli bench --preset "$p" "$@" "${gate[@]}" -o "$OUT/$p-run$run.json" --plot "$OUT/$p-run$run.png" \
      >"$OUT/$p-run$run.txt" 2>"$OUT/$p-run$run.err"
    echo "run $run $p: exit $? in $((SECONDS - start)) s"
  done
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv >"$OUT/gpu-after.csv" 2>&1
for p in $PRESETS; do
  $PY benchmarks/agreement.py "$OUT/$p-run1.json" "$OUT/$p-run2.json" >"$OUT/$p-agreement.txt"
  echo "agreement $p: $(tail -1 "$OUT/$p-agreement.txt")"
  grep BEYOND "$OUT/$p-agreement.txt"
  tail -3 "$OUT/$p-run2.err"
done
$PY -m pytest -q -m gpu tests/bench >"$OUT/gpu-tests.txt" 2>&1; echo "gpu tests: $(tail -1 "$OUT/gpu-tests.txt")"
cp "$BASE" "$FINAL/"
tar -czf "$FINAL/h100-results.tar.gz" -C "$OUT" .
