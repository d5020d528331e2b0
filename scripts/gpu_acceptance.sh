#!/usr/bin/env bash
# One device call: install, the whole GPU test tier (kernels, three-op, modules, HF, bench smoke),
# then the three-op throughput table. Logs land in $OUT.
#   bash scripts/gpu_acceptance.sh
set -u
OUT=${OUT:-out}
mkdir -p "$OUT"
PY=${PY:-python3}  # the device image's python3 holds torch
$PY -m pip install --no-deps --no-build-isolation -q -e . >"$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv
$PY -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)"
start=$SECONDS
$PY -m pytest -q -m gpu -n 8 -p no:cacheprovider tests >"$OUT/gpu-tests.txt" 2>&1
echo "gpu tier: exit $? in $((SECONDS - start)) s: $(tail -1 "$OUT/gpu-tests.txt")"
grep -E "^(FAILED|ERROR)" "$OUT/gpu-tests.txt" | head -20
$PY scripts/bench_three_op.py --out "$OUT/bench_three_op.json" 2>&1 | tail -14
