"""Three-op path throughput on the GPU: sdd (q k^T) and dsd (p v) vs cuBLAS dense matmul.

TFLOP/s count only the layout's non-zero blocks (2 * Z * nnz * block^2 * D) for our kernels and
the full product (2 * Z * H * S^2 * D) for torch.matmul, so the ratio says how close a sparse
kernel gets to the dense library per useful FLOP. The acceptance bar is ratio >= 0.5 at blocks
64 and 128. Each case is checked against dense math on the same inputs before it is timed.

    python scripts/bench_three_op.py [--seq 4096] [--heads 16] [--batch 4] [--dim 64] [--sweep]

Writes ``$OUT/bench_three_op.json`` (or ``--out``) and prints a table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
import triton
from triton.testing import do_bench

from sparsecli.kernels import MatMul, dense_to_sparse, sparse_to_dense

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
SWEEP = [{"num_warps": w, "num_stages": s} for w in (4, 8) for s in (2, 3, 4)]


def env() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        sha = ""
    sha = sha if len(sha) == 40 else None  # the GPU machine's copy may have no history
    return {
        "gpu": torch.cuda.get_device_name(),
        "capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda, "git_sha": sha,
    }


def rel_err(out, ref) -> float:
    return float((out.float() - ref.float()).norm() / ref.float().norm())


def time_ms(fn) -> float:
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def bench_case(op_name, dtype_name, block, args, sweep):
    dt = DTYPES[dtype_name]
    Z, H, S, D = args.batch, args.heads, args.seq, args.dim
    g = torch.Generator().manual_seed(block)
    nb = S // block
    lay = (torch.rand(H, nb, nb, generator=g) < args.density).long()
    lay[:, torch.arange(nb), torch.arange(nb)] = 1
    nnz = int(lay.sum())
    if op_name == "sdd":  # scores = q k^T, as SparseSelfAttention calls it
        q = torch.randn(Z, H, S, D, device="cuda", dtype=dt)
        k = torch.randn(Z, H, S, D, device="cuda", dtype=dt)
        op = MatMul(lay, block, "sdd", trans_b=True)
        ours = lambda: op(q, k)  # noqa: E731
        dense = lambda: torch.matmul(q, k.transpose(-1, -2))  # noqa: E731
        err = rel_err(ours(), dense_to_sparse(dense(), lay, block))
    else:  # out = p v
        p = dense_to_sparse(torch.rand(Z, H, S, S, device="cuda", dtype=dt), lay, block)
        v = torch.randn(Z, H, S, D, device="cuda", dtype=dt)
        pd = sparse_to_dense(p, lay, block)
        op = MatMul(lay, block, "dsd")
        ours = lambda: op(p, v)  # noqa: E731
        dense = lambda: torch.matmul(pd, v)  # noqa: E731
        err = rel_err(ours(), dense())
    flops_sparse = 2.0 * Z * nnz * block * block * D
    flops_dense = 2.0 * Z * H * S * S * D
    ms = time_ms(ours)
    ms_dense = time_ms(dense)
    row = {
        "case_id": f"{op_name}-{dtype_name}-b{block}-S{S}-D{D}",
        "op": op_name, "dtype": dtype_name, "block": block, "batch": Z, "heads": H, "seq": S, "dim": D,
        "density": nnz / (H * nb * nb), "nnz": nnz, "rel_err": err,
        "ms": ms, "tflops": flops_sparse / ms * 1e-9,
        "cublas_ms": ms_dense, "cublas_tflops": flops_dense / ms_dense * 1e-9,
    }
    row["ratio"] = row["tflops"] / row["cublas_tflops"]
    if sweep:
        best = (ms, None)
        for cfg in SWEEP:
            op.config = cfg
            try:
                t = time_ms(ours)
            except Exception as e:  # a config may not fit in shared memory
                print(f"  {row['case_id']} {cfg}: {type(e).__name__}", file=sys.stderr)
                continue
            best = min(best, (t, cfg), key=lambda b: b[0])
        op.config = None
        row["best_config"], row["best_tflops"] = best[1], flops_sparse / best[0] * 1e-9
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--density", type=float, default=0.25)
    ap.add_argument("--blocks", default="16,32,64,128")
    ap.add_argument("--sweep", action="store_true", help="also time a few launch configs at blocks 64/128")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "bench_three_op.json"))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_three_op: needs a CUDA GPU", file=sys.stderr)
        return 1
    results = []
    for block in map(int, args.blocks.split(",")):
        for dtype_name in DTYPES:
            for op_name in ("sdd", "dsd"):
                row = bench_case(op_name, dtype_name, block, args, args.sweep and block >= 64)
                results.append(row)
                print(f"  done {row['case_id']}", file=sys.stderr, flush=True)
                torch.cuda.empty_cache()
    doc = {"schema_version": 1, "env": env(), "args": vars(args), "results": results}
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"{doc['env']['gpu']}  Z={args.batch} H={args.heads} S={args.seq} D={args.dim} density~{args.density}")
    print(f"{'op':4} {'dtype':5} {'block':>5} {'ours TF/s':>10} {'cuBLAS TF/s':>12} {'ratio':>6} {'best swept':>11} {'rel err':>8}")
    for r in results:
        best = f"{r['best_tflops']:.0f}" if "best_tflops" in r else "-"
        print(f"{r['op']:4} {r['dtype']:5} {r['block']:5d} {r['tflops']:10.1f} {r['cublas_tflops']:12.1f} "
              f"{r['ratio']:6.2f} {best:>11} {r['rel_err']:8.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
