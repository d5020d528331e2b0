#!/usr/bin/env bash
# Baseline, stability and cross-GPU check on whatever GPU this runs on, in one device call:
#   1. both presets (fixed, bigbird) with every peer; run 1 writes this GPU's baseline
#      (baselines/<gpu-slug>.json), run 2 is gated against it (expect exit 0)
#   2. run-to-run agreement of every median (expect all within 3%)
#   3. run 2 gated against the committed H100 baseline (expect exit 1: another GPU model)
#   4. run 2 as markdown with its gate, and a README-style table, printed last
#
#   OUT=dir bash benchmarks/run_gpu.sh            # OUT gets at most 8 files (the device's limit)
# FlashAttention-4 (the fa4 and flex-flash rows) comes from ../shared/tools/fa4-wheels: device call 1
# carries .fa4/a and runs `bash .fa4/a/fa4-wheels stage`; call 2 carries .fa4/b and runs
#   bash .fa4/b/fa4-wheels install && export PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages && OUT=$OUT bash benchmarks/run_gpu.sh
# Without it those rows say "unavailable: flash-attn-4 not installed" and everything else runs.
# Knobs: PRESETS, PROVIDERS, DEVICES (e.g. 0,1 for --devices), STOP_AFTER_S (skip what would not
# fit in one 600 s call), GPU_TESTS=0 (skip pytest -m gpu), INSTALL=0, PY, SPARSECLI_CMD (tests).
set -u
FINAL=${OUT:-benchmarks/out}
WORK=$(mktemp -d)  # everything lands here; FINAL gets the few files worth fetching plus one tarball
mkdir -p "$FINAL" "$WORK/baselines"
PY=${PY:-python3}  # the device image's python3 holds torch; its pip's scripts may not be on PATH
if [ "${INSTALL:-1}" = 1 ]; then
  $PY -m pip install --no-deps --no-build-isolation -q -e . >"$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; exit 1; }
fi
if [ -n "${SPARSECLI_CMD:-}" ]; then
  sparsecli() { $SPARSECLI_CMD "$@"; }
else
  sparsecli() { $PY -c 'import sys; from sparsecli.cli import main; sys.argv[0] = "sparsecli"; main()' "$@"; }
fi
PRESETS=${PRESETS:-"fixed bigbird"}
PROVIDERS=${PROVIDERS:-"sparse,three-op,flex,flex-flash,fa4,sdpa-flash"}  # sdpa-masked: slow, not a peer
STOP_AFTER_S=${STOP_AFTER_S:-480}
H100_BASELINE=benchmarks/baselines/nvidia-h100-80gb-hbm3.json
presets=(); for p in $PRESETS; do presets+=(--preset "$p"); done
devices=(); if [ -n "${DEVICES:-}" ]; then devices=(--devices "$DEVICES"); fi
verdicts=()
note() { echo "$*"; verdicts+=("$*"); }
expect() {  # expect NAME WANTED_EXIT GOT_EXIT
  if [ "$3" = "$2" ]; then note "ok    $1: exit $3"; else note "FAIL  $1: exit $3, expected $2"; fi
}

nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv >"$WORK/gpu-before.csv" 2>&1
$PY -c "import flash_attn.cute" >/dev/null 2>&1 && echo "flash-attn-4: importable" || echo "flash-attn-4: NOT importable (fa4/flex-flash rows will say so)"
# One process per run for both presets: they share shapes, so Flex's and FA4's compiled kernels
# are reused across presets instead of compiled twice.
for run in 1 2; do
  if [ "$SECONDS" -gt "$STOP_AFTER_S" ]; then note "SKIP  run $run: out of time after ${SECONDS} s"; continue; fi
  if [ "$run" = 1 ]; then gate=(--update-baseline); else gate=(); fi
  start=$SECONDS
  sparsecli bench "${presets[@]}" --providers "$PROVIDERS" "${devices[@]}" --baseline "$WORK/baselines" "${gate[@]}" \
    -o "$WORK/run$run.json" --plot "$WORK/run$run.png" >"$WORK/run$run.txt" 2>"$WORK/run$run.err"
  rc=$?
  expect "run $run in $((SECONDS - start)) s$([ "$run" = 2 ] && echo ', gated against run 1')" 0 $rc
  [ "$rc" = 0 ] || tail -3 "$WORK/run$run.err"
done
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv >"$WORK/gpu-after.csv" 2>&1

if [ -f "$WORK/run1.json" ] && [ -f "$WORK/run2.json" ]; then
  $PY benchmarks/agreement.py "$WORK/run1.json" "$WORK/run2.json" --limit 0.03 >"$WORK/agreement.txt"
  rc=$?
  expect "agreement: $(tail -1 "$WORK/agreement.txt")" 0 $rc
  grep BEYOND "$WORK/agreement.txt"
  sparsecli compare "$H100_BASELINE" "$WORK/run2.json" >"$WORK/vs-h100.txt" 2>&1
  rc=$?
  expect "gate vs the H100 baseline refused: $(tail -1 "$WORK/vs-h100.txt" | cut -c1-150)" 1 $rc
  sparsecli bench --from "$WORK/run2.json" --baseline "$WORK/baselines" --format markdown >"$WORK/summary.md"
  expect "run 2 as markdown (summary.md), gated against run 1" 0 $?
  $PY benchmarks/summary_table.py "$WORK/run2.json" >"$WORK/table.md"
fi
if [ "${GPU_TESTS:-1}" = 1 ] && [ "$SECONDS" -lt "$STOP_AFTER_S" ]; then
  $PY -m pytest -q -m gpu tests/bench tests/test_flex_mask.py >"$WORK/gpu-tests.txt" 2>&1
  rc=$?
  expect "gpu tests: $(tail -1 "$WORK/gpu-tests.txt")" 0 $rc
fi

cp "$WORK"/baselines/*.json "$FINAL/" 2>/dev/null
for f in run1.json run2.json summary.md; do [ -f "$WORK/$f" ] && cp "$WORK/$f" "$FINAL/"; done
tar -czf "$FINAL/gpu-run.tar.gz" -C "$WORK" .
echo
[ -f "$WORK/table.md" ] && cat "$WORK/table.md"
echo
printf '%s\n' "${verdicts[@]}"
echo "files in $FINAL: $(cd "$FINAL" && ls | tr '\n' ' ')"
if printf '%s\n' "${verdicts[@]}" | grep -q '^FAIL'; then exit 1; fi
