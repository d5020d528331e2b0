"""Issue 18 on one GPU: context parallelism simulated rank by rank.

For each case (``sparsecli.distributed.cases``: S 131072, block 128, 16 query heads over 4 KV
heads of 128, bf16), world size N and strategy, every rank's share of the work runs back to back
on the one GPU: the same steps ``context_parallel_attention`` takes (``attention.forward_steps``
and ``backward_steps``: packing what it sends, its local, helper and remote parts, the merges),
with each exchange answered by tensors of the shapes its peers would send (made once, outside the
timing). Reported per row:

- ``crit_*_ms``: the slowest rank's compute (the critical path), forward and forward+backward,
  and ``crit_over_ideal``: that over the single-GPU kernel's time on the whole sequence / N;
- the bytes each rank receives (the plan's figures) against a dense ring's;
- ``pred_*_ms``: a predicted step time at ``--gbps`` GB/s per direction (NVLink), with the
  exchanges overlapping each rank's local part: max(local part, transfer) + the rest, per pass,
  the slowest rank's; plus ``--latency-us`` per collective (the argument check, the K/V
  exchange, and the spread rows' second exchange where there is one). Without overlap
  (``pred_serial_*``): compute + transfer.

Before timing, each case runs every rank of one split (N = max, balanced) through the in-memory
emulator (``loopback.emulate``) and compares the reassembled output and gradients with the
single-GPU kernel's (bf16: norm-relative error bounded as the kernel tests bound it).

    python scripts/cp_simulate.py [--cases NAME ...] [--world-sizes 2 4 8] [--out FILE.json]
    python scripts/cp_simulate.py --device cpu --seq 2048 --block 16 --heads 4 --kv-heads 2 --head-dim 16  # smoke
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sparsecli.distributed import exchange, plan_context_parallel
from sparsecli.distributed.attention import RankRun, backward_steps, drive, forward_steps
from sparsecli.distributed.cases import CASES, EXTRA_CASES, WORLD_SIZES, add_case_arguments
from sparsecli.distributed.compute import attend
from sparsecli.distributed.loopback import Delivered, emulate
from sparsecli.kernels import blocksparse_attention

CHECK_BOUND = 2e-2  # bf16 norm-relative error of the split against the single-GPU kernel


def time_ms(fn, device) -> float:
    if device.type == "cuda":
        import triton

        return triton.testing.do_bench(fn, warmup=5, rep=25, return_mode="median")
    fn()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


class Canned:
    """Answers one rank's exchanges with tensors of the shapes its peers would send, made on the
    first pass and reused; packs what the rank sends, as a real exchange would (its copy is the
    rank's cost)."""

    def __init__(self, device):
        self.device, self.answers, self.i = device, [], 0

    def __call__(self, send, specs, active):
        if active:
            exchange.pack(send, self.device)
        if self.i == len(self.answers):
            self.answers.append([[torch.randn(shape, device=self.device).to(dtype) for shape, dtype in peer]
                                 for peer in specs])
        answer = Delivered(self.answers[self.i])
        self.i += 1
        return answer

    def rewind(self):
        self.i = 0
        return self


def rank_times(plan, rank, full, device) -> dict:
    """This rank's forward and forward+backward, and its local part's alone (ms)."""
    q, k, v, dout = (plan.shard(x, rank, dim=2) for x in full)
    if q.shape[2] == 0:
        return dict(fwd=0.0, fwdbwd=0.0, local_fwd=0.0, local_fwdbwd=0.0)
    run = RankRun(plan, plan.problem(rank), plan.world_size, None, device, None, False)
    canned = Canned(device)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]

    def fwd():
        drive(forward_steps(run, q, k, v, False), canned.rewind())

    def fwdbwd():
        st = drive(forward_steps(run, *leaves, True), canned.rewind())
        drive(backward_steps(st, dout, None), canned)

    p = plan.problem(rank)

    def local_fwd():
        attend(q, k, v, p.local, plan.block, plan.causal, None)

    def local_fwdbwd():
        out, _ = attend(*leaves, p.local, plan.block, plan.causal, None)
        torch.autograd.grad(out, leaves, dout)

    return {name: time_ms(fn, device) for name, fn in
            (("fwd", fwd), ("fwdbwd", fwdbwd), ("local_fwd", local_fwd), ("local_fwdbwd", local_fwdbwd))}


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check_split(plan, full, want) -> dict:
    """Every rank emulated: the reassembled output and q/k/v gradients against the kernel's."""
    n = plan.world_size
    shards = [[plan.shard(x, r, dim=2) for r in range(n)] for x in full]
    outs, _, grads = emulate(plan, *shards[:3], dout=shards[3])
    got = [plan.unshard(outs, dim=2)] + [plan.unshard(g, dim=2) for g in grads]
    errs = {name: rel(a, b) for name, a, b in zip(("out", "dq", "dk", "dv"), got, want)}
    bad = {k: v for k, v in errs.items() if not v <= CHECK_BOUND}
    if bad:
        raise SystemExit(f"{plan}: split differs from the single-GPU kernel: {bad}")
    return errs


def predict(plan, stats, times, gbps, latency_us) -> dict:
    """Predicted step (ms): per pass, the slowest rank's max(local part, transfer) + the rest."""
    spread = plan.spread_traffic
    lat = latency_us / 1e3
    n_fwd = 1 + (plan.kv_traffic or spread) + spread  # argument check, K/V (+ Q), partials
    n_bwd = (plan.kv_traffic or spread) + spread
    fwd = serial_fwd = bwd = serial_bwd = 0.0
    for r, t in enumerate(times):
        comm_f = stats["bytes_forward"][r] / (gbps * 1e9) * 1e3 + n_fwd * lat
        comm_b = stats["bytes_backward"][r] / (gbps * 1e9) * 1e3 + n_bwd * lat
        t_bwd, local_bwd = t["fwdbwd"] - t["fwd"], t["local_fwdbwd"] - t["local_fwd"]
        fwd = max(fwd, max(t["local_fwd"], comm_f) + t["fwd"] - t["local_fwd"])
        bwd = max(bwd, max(local_bwd, comm_b) + t_bwd - local_bwd)
        serial_fwd, serial_bwd = max(serial_fwd, t["fwd"] + comm_f), max(serial_bwd, t_bwd + comm_b)
    return dict(pred_fwd_ms=fwd, pred_fwdbwd_ms=fwd + bwd, pred_serial_fwd_ms=serial_fwd,
                pred_serial_fwdbwd_ms=serial_fwd + serial_bwd)


def run_case(case, args, device, dtype) -> list[dict]:
    lay = case.layout(seq_len=args.seq, heads=args.heads, block=args.block)
    gen = torch.Generator(device=device).manual_seed(0)
    S = args.seq

    def rand(h):
        return torch.randn(1, h, S, args.head_dim, device=device, generator=gen).to(dtype)

    full = [rand(args.heads), rand(args.kv_heads), rand(args.kv_heads), rand(args.heads)]
    leaves = [x.detach().requires_grad_() for x in full[:3]]
    out = blocksparse_attention(*leaves, lay, args.block, causal=case.causal)
    out.backward(full[3])
    want = [out.detach()] + [x.grad for x in leaves]
    single_fwd = time_ms(lambda: blocksparse_attention(*full[:3], lay, args.block, causal=case.causal), device)

    def single_step():
        o = blocksparse_attention(*leaves, lay, args.block, causal=case.causal)
        torch.autograd.grad(o, leaves, full[3])

    single_fwdbwd = time_ms(single_step, device)
    check = check_split(plan_context_parallel(lay, args.block, max(args.world_sizes), causal=case.causal), full, want)
    print(f"{case.name}: split of {max(args.world_sizes)} matches the kernel (rel {check}); single GPU "
          f"{single_fwd:.3f} ms fwd, {single_fwdbwd:.3f} ms fwd+bwd", flush=True)
    rows = []
    for n in args.world_sizes:
        for strategy in args.strategies:
            plan = plan_context_parallel(lay, args.block, n, causal=case.causal, strategy=strategy)
            stats = plan.stats(head_dim=args.head_dim, kv_heads=args.kv_heads, dtype=dtype, q_heads=args.heads)
            times = [rank_times(plan, r, full, device) for r in range(n)]
            crit_fwd, crit_fwdbwd = max(t["fwd"] for t in times), max(t["fwdbwd"] for t in times)
            row = dict(case=case.name, causal=case.causal, world_size=n, strategy=strategy,
                       imbalance=stats["imbalance"], spread_rows=int(plan.spread.sum()),
                       single_fwd_ms=single_fwd, single_fwdbwd_ms=single_fwdbwd,
                       crit_fwd_ms=crit_fwd, crit_fwdbwd_ms=crit_fwdbwd,
                       crit_over_ideal_fwd=crit_fwd * n / single_fwd, crit_over_ideal_fwdbwd=crit_fwdbwd * n / single_fwdbwd,
                       max_recv_mib_fwd=max(stats["bytes_forward"]) / 2**20,
                       max_recv_mib_bwd=max(stats["bytes_backward"]) / 2**20, ring_mib=stats["ring_bytes"] / 2**20,
                       **predict(plan, stats, times, args.gbps, args.latency_us),
                       rank_ms=[{k: round(v, 4) for k, v in t.items()} for t in times],
                       recv_mib_fwd=[b / 2**20 for b in stats["bytes_forward"]],
                       case_id=f"{case.name}-N{n}-{strategy}")
            row["pred_over_ideal_fwdbwd"] = row["pred_fwdbwd_ms"] * n / single_fwdbwd
            rows.append(row)
            print(f"  N={n} {strategy:<10} imbalance {row['imbalance']:.3f}  critical path fwd "
                  f"{crit_fwd:.3f} ms ({row['crit_over_ideal_fwd']:.2f}x ideal), fwd+bwd {crit_fwdbwd:.3f} ms "
                  f"({row['crit_over_ideal_fwdbwd']:.2f}x)  recv {row['max_recv_mib_fwd']:.1f}/{row['ring_mib']:.1f} MiB "
                  f" predicted fwd+bwd {row['pred_fwdbwd_ms']:.3f} ms ({row['pred_over_ideal_fwdbwd']:.2f}x)", flush=True)
    return rows, check


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_case_arguments(ap)
    ap.add_argument("--world-sizes", nargs="*", type=int, default=list(WORLD_SIZES))
    ap.add_argument("--gbps", type=float, default=450.0, help="link bandwidth per direction, GB/s")
    ap.add_argument("--latency-us", type=float, default=20.0, help="assumed fixed cost of one collective")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--deadline-s", type=float, help="start no new case after this many seconds")
    ap.add_argument("--out", help="write the rows and the environment as JSON here (after every case)")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
        end = time.perf_counter() + 2  # leave the idle clocks before the first timing
        while time.perf_counter() < end:
            a @ a
        torch.cuda.synchronize()
    from sparsecli.bench.results import capture_env

    env, began = capture_env(), time.perf_counter()
    rows, checks, skipped = [], {}, []

    def write():
        if args.out:
            doc = {"schema_version": 1, "env": env, "assumptions": {"gbps": args.gbps, "latency_us": args.latency_us},
                   "shape": {"seq": args.seq, "block": args.block, "heads": args.heads, "kv_heads": args.kv_heads,
                             "head_dim": args.head_dim, "dtype": str(dtype)},
                   "checks": checks, "skipped": skipped, "results": rows}
            with open(args.out, "w") as f:
                json.dump(doc, f, indent=1)

    for case in (c for c in CASES + EXTRA_CASES if c.name in args.cases):
        if args.deadline_s and time.perf_counter() - began > args.deadline_s:
            skipped.append(case.name)
            continue
        case_rows, checks[case.name] = run_case(case, args, device, dtype)
        rows += case_rows
        write()  # after every case: a run cut short still leaves what it measured
    write()
    print_table(rows)
    if skipped:
        print(f"not run (past --deadline-s {args.deadline_s}): {', '.join(skipped)}")
    if args.out:
        print(f"wrote {args.out}")


def print_table(rows):
    print("\n| case | N | strategy | imbalance | crit fwd / ideal | crit fwd+bwd / ideal | max recv MiB (ring) | "
          "pred fwd+bwd ms | pred / ideal |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['world_size']} | {r['strategy']} | {r['imbalance']:.3f} | "
              f"{r['crit_over_ideal_fwd']:.2f} | {r['crit_over_ideal_fwdbwd']:.2f} | "
              f"{r['max_recv_mib_fwd']:.1f} ({r['ring_mib']:.1f}) | {r['pred_fwdbwd_ms']:.3f} | "
              f"{r['pred_over_ideal_fwdbwd']:.2f} |")


if __name__ == "__main__":
    main()
