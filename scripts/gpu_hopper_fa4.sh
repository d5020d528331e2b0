#!/usr/bin/env bash
# The Hopper kernels vs FlashAttention-4 (same run) on the H200, in two back-to-back device calls (FlashAttention-4's wheels travel in two
# parts, ../shared/tools/fa4-wheels; prepare them first with `fa4-wheels prepare`).
#
#   call 1, carry [".fa4/a"]:  bash scripts/gpu_hopper_fa4.sh check   # stage part a; TMA reduce probe;
#                                                                  # the deterministic=False backward's GPU tests
#   call 2, carry [".fa4/b"]:  bash scripts/gpu_hopper_fa4.sh bench   # install FA4; the same-run table
#
# `run` resolves carry paths in the checkout the session started in (not a helper's worktree):
# prepare .fa4 there. Outputs go to $OUT (hopper2-*.txt / .json). Call 2 must follow call 1 within the machine's warm
# window (~30 s): part a waits in /tmp. Every provider is checked against float64 before timing.
set -uo pipefail
OUT=${OUT:-.}
export PYTHONUNBUFFERED=1
case "${1:-}" in
  check)
    bash .fa4/a/fa4-wheels stage
    python3 -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | tail -2
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv,noheader
    python3 -m sparsecli.kernels.hopper.probes 2>&1 | tee "$OUT/hopper2-probe.txt"
    # The deterministic=False backward against the deterministic one (bf16 D128) and against float64
    # (GQA, causal, lse gradient, D64); the full GPU tier is the coordinator's.
    timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider \
      "tests/kernels/test_hopper_gpu.py::test_one_launch_backward_runs_one_kernel_fewer_and_matches_the_deterministic_one" \
      "tests/kernels/test_hopper_gpu.py::test_hopper_one_launch_backward_grid[bfloat16-d64-causal]" \
      2>&1 | tail -25 | tee "$OUT/hopper2-gpu-tests.txt"
    ;;
  bench)
    bash .fa4/b/fa4-wheels install || exit 1
    export PYTHONPATH=/tmp/fa4site:/tmp/fa4site/nvidia_cutlass_dsl/dsl_packages
    python3 -c "import flash_attn.cute, importlib.metadata as m; print('flash-attn-4', m.version('flash-attn-4'))"
    # fwd+bwd first (the new backward), then forward; D128 before D64; JSON rewritten after every case.
    timeout "${BENCH_SECONDS:-300}" python3 scripts/hopper_check.py \
      --cases D128-bf16-fwdbwd D64-bf16-fwdbwd D128-bf16-fwd D64-bf16-fwd \
      --providers hopper hopper-nondet flex-flash fa4-sparse fa4-sparse-det fa4-dense \
      --out "$OUT/hopper2-table.json" 2>&1 | grep -v "generate_mlir_function_types" | tee "$OUT/hopper2-table.txt"
    ;;
  *) sed -n 2,10p "$0"; exit 2 ;;
esac
