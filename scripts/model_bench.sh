#!/usr/bin/env bash
# issue 19 on the GPU machine: sparsecli bench --model on the bundled Llama-shaped config (8 layers,
# hidden 2048, 16 heads, 4 KV heads) with the bundled causal_sliding_window preset (block 128, a
# 4096-token window): every provider checked on a short input first, then fwd+bwd steps at S 32768
# and 65536 (batch 1) and decode at a 32k context, batch 8 (eager dynamic cache, eager static cache,
# CUDA graph of the static-cache step). Results JSON and log under $OUT (or ./model-bench-out).
set -euo pipefail
out=${OUT:-model-bench-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/pip.log" 2>&1 || { cat "$out/pip.log"; exit 1; }
cli=(python3 -c 'import sys; from sparsecli.cli import main; sys.argv[0] = "sparsecli"; main()')  # pip's scripts may not be on PATH
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
timeout "${MODEL_BENCH_TIMEOUT:-560}" "${cli[@]}" bench --model llama-8l-2048 --preset causal_sliding_window \
  --seq "${SEQS:-32768,65536}" --context 32768 --decode-batch 8 -o "$out/model-bench.json" 2>&1 | tee "$out/model-bench.log"
