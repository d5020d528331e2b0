"""Tile sweep of the portable Triton attention kernels: one pass's config varied at a time.

    python scripts/tune_tiles.py [--cases SUBSTR ...] [--out FILE]
    python scripts/tune_tiles.py --warm-only [--shard I/N]     # compile a share of the configs
    python scripts/tune_tiles.py --summary TABLE.json TUNE.json  # head dims 96/256 after a sweep

Each config is
checked against the default config's results on the same inputs before it is timed
(``do_bench`` median of the pass alone: the forward, or the whole backward with one of its two
launches varied). Every config in ``TUNE`` was first compiled for sm90 on a CPU
(``scripts/compile_sm90.py --candidates D``: no spills, shared memory within 227 KB, warpgroup
MMA). ``summary`` turns a sweep and ``bench_features.py``'s head-dim rows into the TF/s fractions the
best configs would give.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, fields

import torch
import triton

from attention_cases import BF16, H, Case, cases, dump, make_layout, rel, warm_gpu
from sparsecli.kernels.fused import plan as attn


def _cfgs(*ts, **flags):
    return [attn.KernelConfig(*t, **flags) for t in ts]


# Per pass and head dim: (outer, inner, warps, stages[, flags]); the default is always timed too.
# dK/dV's outer tile is keys, the forward's and dQ's queries.
TUNE = {
    ("fwd", 64): _cfgs((64, 64, 4, 2), (64, 64, 4, 3), (64, 128, 4, 3), (64, 128, 4, 4)),
    ("fwd", 128): _cfgs((128, 64, 4, 4), (128, 64, 4, 3), (128, 128, 8, 2)),
    ("dkdv", 64): _cfgs((128, 32, 4, 5), (64, 32, 4, 2), (64, 64, 4, 3), (128, 32, 4, 3))
    + _cfgs((64, 64, 4, 2), query_major=True),
    ("dkdv", 128): _cfgs((64, 64, 4, 3), (64, 64, 4, 2), query_major=True) + _cfgs((64, 64, 4, 3)),
    ("dq", 64): _cfgs((64, 64, 4, 3), (64, 64, 4, 2), (128, 64, 8, 3)),
    ("dq", 128): _cfgs((64, 64, 4, 3), (64, 32, 4, 3)),
    # D256, issue 11 run 1 (then 64x64 forward, 64x32 backward tiles): 0.51x D128's TF/s forward,
    # 0.38x fwd+bwd; its 32-query dK/dV steps compiled to mma.sync (the last dkdv entry).
    ("fwd", 256): _cfgs((64, 64, 8, 2), (128, 32, 8, 2)),
    ("dkdv", 256): _cfgs((64, 32, 8, 2), (64, 64, 8, 2)) + _cfgs((64, 32, 8, 2), query_major=True),
    ("dq", 256): _cfgs((64, 32, 8, 2), (64, 64, 4, 2)),
    # D96: the forward holds rows as 3 x 32 columns (pad_head: as run 1, 128 with zeros, 0.79x
    # D128's TF/s); the backward pads to 128 (75% of D128's bytes, its FLOPs); 8 warps halve
    # the registers.
    ("fwd", 96): _cfgs((128, 64, 4, 4), pad_head=True) + _cfgs((128, 128, 8, 2), (128, 64, 8, 3)),
    ("dkdv", 96): _cfgs((64, 64, 4, 2), query_major=True) + _cfgs((64, 64, 4, 3)),
    ("dq", 96): _cfgs((128, 64, 8, 2),),
}
# Representative cases: short rows (sliding), long rows (Fixed, dense), both head dims.
TUNE_CASES = ("sliding-b128-S8192-B4-D64-bf16-fwdbwd", "sliding-b64-S8192-B4-D64-bf16-fwdbwd",
              "fixed-b128-S16384-B2-D64-bf16-fwdbwd", "sliding-b128-S8192-B4-D128-bf16-fwdbwd",
              "fixed-b128-S16384-B2-D128-bf16-fwdbwd", "dense-b128-S4096-B8-D128-bf16-fwdbwd")
# Shapes only the sweep times: head dims 96 and 256, on bench_features.py's head-dim case.
TUNE_EXTRA = [Case("sliding", 128, 8192, 4, D, BF16, mode, "headdim")
              for D in (96, 256) for mode in ("fwd", "fwdbwd")]


def _tune_tasks(selected):
    """(case, pass, config) to time: each pass's configs vary alone, the others stay default."""
    return [(c, which, cfg) for c in selected
            for which in (("fwd",) if c.mode == "fwd" else ("dq", "dkdv"))
            for cfg in [None] + TUNE[(which, _tune_dim(which, c.D))]]  # None: the default


def _tune_dim(which, D):
    """The TUNE list a head dim takes: its own, else its tiles' power of two's."""
    return D if (which, D) in TUNE else 64 if D <= 64 else 128 if D <= 128 else 256


def tune(selected, warm_only=False, shard=(0, 1), on_row=None):
    """Time one kernel pass per config, without the baselines (``on_row(rows)`` after each);
    ``warm_only`` just compiles a shard of the configs, so that parallel processes fill Triton's
    cache for the timing process."""
    rows, cur = [], None
    tasks = _tune_tasks(selected)
    if warm_only:
        tasks = tasks[shard[0]::shard[1]]
    for c, which, cfg in tasks:
        if cur is not c:  # inputs, a plan on the default configs, and its reference results
            cur = c
            lay = make_layout(c.layout, c.block, c.S).cuda()
            q, k, v, dout = (torch.randn(c.B, H, c.S, c.D, device="cuda", dtype=c.dtype) for _ in range(4))
            plan = attn._Plan(attn.AttnArgs(lay, c.block, False, c.D ** -0.5), q.shape, k.shape, c.dtype, q.device)
            defaults = dict(plan.configs)
            if warm_only:  # compiling needs no values: no default-config run (each shard compiles its own)
                out, lse, ref = torch.randn_like(q), torch.zeros(q.shape[:3], device="cuda"), None
            else:
                out, lse = attn._forward(plan, q, k, v)
                ref = (out,) if c.mode == "fwd" else attn._backward(plan, q, k, v, out, lse, dout)
        if cfg is None:
            cfg = defaults[which]
        elif cfg == defaults[which]:
            continue
        plan.configs = dict(defaults, **{which: cfg})
        fn = ((lambda: attn._forward(plan, q, k, v)) if which == "fwd"
              else (lambda: attn._backward(plan, q, k, v, out, lse, dout)))
        try:
            got = fn()
            if warm_only:
                continue
            err = max(rel(g, r) for g, r in zip(got[:1] if which == "fwd" else got, ref))
            if not rows:  # the first timing of a process runs slow (perf notes, run 13): a throwaway
                triton.testing.do_bench(fn, warmup=25, rep=100)
            ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
        except Exception as e:  # noqa: BLE001 - a config that does not fit is reported, not fatal
            rows.append(dict(case_id=c.case_id, which=which, config=asdict(cfg), error=f"{type(e).__name__}: "
                             f"{str(e)[:200]}", default=cfg == defaults[which]))
            print(f"  {c.case_id} {which} {cfg_str(cfg)}: {rows[-1]['error']}", file=sys.stderr)
            continue
        rows.append(dict(case_id=c.case_id, which=which, config=asdict(cfg), ms=ms, rel_err=err,
                         default=cfg == defaults[which]))
        print(f"  {c.case_id:40s} {which:4s} {cfg_str(cfg)}: {ms:.4f} ms err {err:.1e}"
              f"{'  (default)' if rows[-1]['default'] else ''}", file=sys.stderr, flush=True)
        if on_row:
            on_row(rows)
    return rows


def cfg_str(cfg):
    """(outer, inner, warps, stages) plus the flags that differ from the defaults."""
    base = (cfg.outer, cfg.inner, cfg.num_warps, cfg.num_stages)
    flags = [f.name for f in fields(cfg)[4:] if getattr(cfg, f.name) != f.default]
    return str(base) + ("+" + "+".join(flags) if flags else "")


def _best(rows):
    """{(case, pass): (default row, fastest row)} over the rows that ran."""
    out = {}
    for r in rows:
        if "ms" not in r:
            continue
        d, b = out.get((r["case_id"], r["which"]), (None, None))
        out[(r["case_id"], r["which"])] = (r if r["default"] else d, r if b is None or r["ms"] < b["ms"] else b)
    return out


def print_tune(rows):
    """Per case and pass: every config's time and its time over the default's; failures say why."""
    print(f"{'case':40s} {'pass':4s} {'default ms':>10s} {'config':>30s} {'ms':>8s} {'x def':>8s}")
    best = _best(rows)
    for key in dict.fromkeys((r["case_id"], r["which"]) for r in rows):
        d = best.get(key, (None, None))[0]
        dms = d["ms"] if d else float("nan")
        for r in sorted((r for r in rows if (r["case_id"], r["which"]) == key), key=lambda r: r.get("ms", 1e9)):
            cfg = cfg_str(attn.KernelConfig(**r["config"]))
            tail = f"{r['ms']:8.4f} {r['ms'] / dms:8.3f}" if "ms" in r else f"failed: {r['error'][:60]}"
            print(f"{key[0]:40s} {key[1]:4s} {dms:10.4f} {cfg:>30s} {tail}")


def summary(tune_rows, table_rows):
    """Head dims 96 and 256: the TF/s fractions of D128 with the defaults (from the
    table) and with each pass's fastest config instead (the passes' savings add up)."""
    best = _best(tune_rows)
    print(f"{'head dim':>8s} {'mode':6s} {'vs D128 (auto)':>14s} {'vs D128 (triton)':>16s} "
          f"{'best configs: auto/triton':>25s}  best configs")
    for r in table_rows:
        cid = r.get("case_id", "")
        if not cid.startswith("headdim-") or "tflops_over_d128" not in r or "-D128-" in cid:
            continue
        D, mode = int(cid.split("-D")[1].split("-")[0]), cid.rsplit("-", 1)[1]
        case = f"sliding-b128-S8192-B4-D{D}-bf16-"
        saved, picks = 0.0, []
        for which in ("fwd",) if mode == "fwd" else ("fwd", "dq", "dkdv"):
            d, b = best.get((case + ("fwd" if which == "fwd" else "fwdbwd"), which), (None, None))
            if d and b:
                saved += d["ms"] - b["ms"]
                picks.append(f"{which} {cfg_str(attn.KernelConfig(**b['config']))}")
        frac, frac_t = r["tflops_over_d128"], r.get("tflops_over_d128_triton", float("nan"))
        gain = r["ms"] / (r["ms"] - saved) if picks else float("nan")
        print(f"{D:8d} {mode:6s} {frac:14.2f} {frac_t:16.2f} {f'{frac * gain:.2f}/{frac_t * gain:.2f}':>25s}  "
              f"{'; '.join(picks)}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=[], help="keep cases whose id contains any of these")
    ap.add_argument("--warm-only", action="store_true", help="compile (a shard of) the configs, do not time")
    ap.add_argument("--shard", default="0/1", help="with --warm-only: I/N, this process's share")
    ap.add_argument("--summary", nargs=2, metavar=("TABLE", "TUNE"), help="a bench_features.py and a sweep JSON")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "tune_tiles.json"))
    args = ap.parse_args()
    if args.summary:
        table, tuned = ({"results": []} if not os.path.exists(p) else json.load(open(p)) for p in args.summary)
        return summary(tuned["results"], table["results"])
    pool = cases() + TUNE_EXTRA
    wanted = args.cases or TUNE_CASES
    # In the order of the patterns given (cases a cut-short run must reach first go first).
    selected = list(dict.fromkeys(c for w in wanted for c in pool if w in c.case_id))
    shard = tuple(int(x) for x in args.shard.split("/"))
    if not args.warm_only:
        warm_gpu()
    rows = tune(selected, args.warm_only, shard, on_row=lambda rows: dump(args.out, rows))
    if not args.warm_only:
        dump(args.out, rows)
        print_tune(rows)


if __name__ == "__main__":
    main()
