#!/usr/bin/env bash
# One device call: install, the whole GPU test tier (kernels, three-op, modules, HF, bench smoke),
# then the three-op throughput table. Logs land in $OUT. Exits with pytest's status (the table is
# printed either way), so a failing GPU tier fails the call.
#   bash scripts/gpu_acceptance.sh
set -u
set -o pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
PY=${PY:-python3}  # the device image's python3 holds torch
$PY -m pip install --no-deps --no-build-isolation -q -e . >"$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv
$PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
# pytest-xdist spreads the tier over 8 workers; without it the tier runs in one process.
workers=()
if $PY -c "import xdist" >/dev/null 2>&1; then
    workers=(-n 8)
else
    echo "pytest-xdist not installed: running the GPU tier without -n 8"
fi
start=$SECONDS
$PY -m pytest -q -m gpu ${workers[@]+"${workers[@]}"} -p no:cacheprovider tests >"$OUT/gpu-tests.txt" 2>&1
tests_rc=$?
echo "gpu tier: exit $tests_rc in $((SECONDS - start)) s: $(tail -1 "$OUT/gpu-tests.txt")"
grep -E "^(FAILED|ERROR)" "$OUT/gpu-tests.txt" | head -20
$PY scripts/bench_three_op.py --out "$OUT/bench_three_op.json" 2>&1 | tail -14
bench_rc=$?
if [ "$bench_rc" -ne 0 ]; then
    echo "bench_three_op: exit $bench_rc"
fi
exit "$tests_rc"
