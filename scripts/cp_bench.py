"""Issue 18 on N GPUs: step time of context_parallel_attention against PyTorch's context parallel
SDPA and our single-GPU kernel on the whole sequence.

    torchrun --nproc-per-node N scripts/cp_bench.py [--cases NAME ...] [--strategies ...] [--out FILE.json]
    torchrun --nproc-per-node 2 scripts/cp_bench.py --device cpu --seq 2048 --block 16 --heads 4 \\
        --kv-heads 2 --head-dim 16 --cases bigbird   # a smoke run on gloo

Per case (``sparsecli.distributed.cases``) and strategy, providers:

- ``ours``: ``context_parallel_attention`` on each rank's shard (exchanges overlapping the local
  part), and ``ours-serial`` (``SPARSECLI_CP_OVERLAP=0`` behaviour: each exchange completes
  before any compute): which of the two is faster decides the default;
- ``torch-cp``: ``torch.distributed.tensor.experimental.context_parallel`` around
  ``scaled_dot_product_attention`` on the same sequence (dense, causal where the layout is; K/V
  heads repeated to the query heads), the ring attention PyTorch ships;
- ``single``: ``blocksparse_attention`` on the whole sequence on one GPU (each rank times its
  own copy), the reference for per-GPU efficiency: ``(single / N) / ours``.

Every provider's output is checked before it is timed: ours per rank against the shard of the
single-GPU kernel's output (and the gradients' shards), torch-cp against dense SDPA on the whole
sequence. A step is timed on every rank between barriers (wall clock over ``--iters`` steps after
warm-up, the slowest rank's). Rank 0 prints a table and writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.distributed as dist

from sparsecli.distributed import context_parallel_attention, plan_context_parallel
from sparsecli.distributed import attention as cp_attention
from sparsecli.distributed.cases import CASES, EXTRA_CASES, add_case_arguments
from sparsecli.kernels import blocksparse_attention

CHECK_BOUND = 2e-2  # bf16 norm-relative error against the reference output


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def worst(x: float) -> float:
    t = torch.tensor([x], dtype=torch.float64, device=DEVICE if BACKEND == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    dist.barrier()


def step_ms(fn, iters: int, warmup: int) -> float:
    """The slowest rank's wall time per step, all ranks starting together."""
    for _ in range(warmup):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return worst((time.perf_counter() - t) * 1e3 / iters)


def passes(fn, leaves, dout):
    """(forward, forward+backward) closures of ``fn`` over ``leaves``."""
    def fwd():
        with torch.no_grad():
            fn(*leaves)

    def fwdbwd():
        torch.autograd.grad(fn(*leaves), leaves, dout)

    return fwd, fwdbwd


def torch_cp(case, full, args, world_size):
    """(fwd ms, fwd+bwd ms, check error) of PyTorch's context-parallel SDPA, or raise."""
    import torch.nn.functional as F
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.experimental import context_parallel
    from torch.distributed.tensor.experimental._attention import context_parallel_unshard

    mesh = init_device_mesh("cuda", (world_size,))
    group = args.heads // args.kv_heads
    q, k, v, dout = (x.clone() for x in full)
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    with torch.no_grad():
        want = F.scaled_dot_product_attention(q, k, v, is_causal=case.causal)
    with context_parallel(mesh, buffers=[q, k, v, dout], buffer_seq_dims=[2, 2, 2, 2], no_restore_buffers={q, k, v, dout}):
        leaves = [x.requires_grad_() for x in (q, k, v)]

        def sdpa(a, b, c):
            return F.scaled_dot_product_attention(a, b, c, is_causal=case.causal)

        with torch.no_grad():
            out = sdpa(*leaves)
        (got,) = context_parallel_unshard(mesh, [out], [2])
        err = worst(rel(got, want))
        fwd, fwdbwd = passes(sdpa, leaves, dout)
        return step_ms(fwd, args.iters, args.warmup), step_ms(fwdbwd, args.iters, args.warmup), err


def run_case(case, args, rank, world_size) -> list[dict]:
    lay = case.layout(seq_len=args.seq, heads=args.heads, block=args.block)
    gen = torch.Generator(device=DEVICE).manual_seed(0)

    def rand(h):
        return torch.randn(1, h, args.seq, args.head_dim, device=DEVICE, generator=gen).to(DTYPE)

    full = [rand(args.heads), rand(args.kv_heads), rand(args.kv_heads), rand(args.heads)]
    leaves = [x.detach().requires_grad_() for x in full[:3]]
    ref = blocksparse_attention(*leaves, lay, args.block, causal=case.causal)
    ref.backward(full[3])
    ref = [ref.detach()] + [x.grad for x in leaves]

    def single(a, b, c):
        return blocksparse_attention(a, b, c, lay, args.block, causal=case.causal)

    s_fwd, s_fwdbwd = passes(single, leaves, full[3])
    single_ms = (step_ms(s_fwd, args.iters, args.warmup), step_ms(s_fwdbwd, args.iters, args.warmup))
    rows = []

    def row(provider, strategy, fwd_ms, fwdbwd_ms, err, **extra):
        rows.append(dict(case=case.name, world_size=world_size, provider=provider, strategy=strategy,
                         fwd_ms=fwd_ms, fwdbwd_ms=fwdbwd_ms, check_rel_err=err,
                         efficiency_fwd=None if fwd_ms is None else single_ms[0] / world_size / fwd_ms,
                         efficiency_fwdbwd=None if fwdbwd_ms is None else single_ms[1] / world_size / fwdbwd_ms,
                         case_id=f"{case.name}-N{world_size}-{provider}-{strategy}", **extra))

    row("single", "-", *single_ms, 0.0)
    for strategy in args.strategies:
        plan = plan_context_parallel(lay, args.block, world_size, causal=case.causal, strategy=strategy)
        mine = [plan.shard(x, rank, dim=2) for x in full]
        cp_leaves = [x.detach().requires_grad_() for x in mine[:3]]
        out = context_parallel_attention(*cp_leaves, plan)
        out.backward(mine[3])
        got = [out.detach()] + [x.grad for x in cp_leaves]
        err = worst(max(rel(a, plan.shard(b, rank, dim=2)) for a, b in zip(got, ref)))
        if not err <= CHECK_BOUND:
            row("ours", strategy, None, None, err, failed=f"output differs from the single-GPU kernel: {err:.2e}")
            continue
        stats = plan.stats(head_dim=args.head_dim, kv_heads=args.kv_heads, dtype=DTYPE, q_heads=args.heads)
        for provider, overlap in (("ours", True), ("ours-serial", False)):
            cp_attention.OVERLAP = overlap

            def ours(a, b, c):
                return context_parallel_attention(a, b, c, plan)

            fwd, fwdbwd = passes(ours, cp_leaves, mine[3])
            row(provider, strategy, step_ms(fwd, args.iters, args.warmup), step_ms(fwdbwd, args.iters, args.warmup),
                err, imbalance=stats["imbalance"], max_recv_mib_fwd=max(stats["bytes_forward"]) / 2**20,
                ring_mib=stats["ring_bytes"] / 2**20)
        cp_attention.OVERLAP = True
    if DEVICE.type != "cuda":
        row("torch-cp", "-", None, None, None, failed="needs CUDA (PyTorch's context parallel runs on GPUs)")
    else:
        try:
            t_fwd, t_fwdbwd, err = torch_cp(case, full, args, world_size)
            if err <= CHECK_BOUND:
                row("torch-cp", "zigzag" if case.causal else "contiguous", t_fwd, t_fwdbwd, err)
            else:
                row("torch-cp", "-", None, None, err, failed=f"output differs from dense SDPA: {err:.2e}")
        except Exception as e:  # noqa: BLE001 - an experimental API: report why, keep the other rows
            row("torch-cp", "-", None, None, None, failed=f"{type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return rows


def main():
    global DEVICE, DTYPE, BACKEND
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(ap)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", help="rank 0 writes the rows and the environment as JSON here")
    args = ap.parse_args()
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda":
        DEVICE = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(DEVICE)
    BACKEND = "nccl" if DEVICE.type == "cuda" else "gloo"
    DTYPE = torch.bfloat16 if DEVICE.type == "cuda" else torch.float32
    dist.init_process_group(BACKEND)
    rank, world_size = dist.get_rank(), dist.get_world_size()
    rows = []
    try:
        for case in (c for c in CASES + EXTRA_CASES if c.name in args.cases):
            rows += run_case(case, args, rank, world_size)
            if rank == 0:
                print(f"{case.name}: done", flush=True)
    finally:
        if rank == 0:
            print_table(rows)
            if args.out:
                from sparsecli.bench.results import capture_env

                doc = {"schema_version": 1, "env": capture_env(), "world_size": world_size,
                       "shape": {k: getattr(args, k) for k in ("seq", "block", "heads", "kv_heads", "head_dim")},
                       "dtype": str(DTYPE), "results": rows}
                with open(args.out, "w") as f:
                    json.dump(doc, f, indent=1)
                print(f"wrote {args.out}")
        dist.destroy_process_group()


def print_table(rows):
    def ms(x):
        return "-" if x is None else f"{x:.3f}"

    print("\n| case | N | provider | strategy | fwd ms | fwd+bwd ms | per-GPU efficiency fwd / fwd+bwd | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        eff = "-" if r["efficiency_fwd"] is None else f"{r['efficiency_fwd']:.0%} / {r['efficiency_fwdbwd']:.0%}"
        print(f"| {r['case']} | {r['world_size']} | {r['provider']} | {r['strategy']} | {ms(r['fwd_ms'])} | "
              f"{ms(r['fwdbwd_ms'])} | {eff} | {r.get('failed', '')} |")


DEVICE, DTYPE, BACKEND = torch.device("cpu"), torch.float32, "gloo"

if __name__ == "__main__":
    main()
