"""Performance table: fused block-sparse attention vs compiled Flex and SDPA FLASH.

Same-run ratios on one GPU. Every case checks our output against Flex (or SDPA for the dense
layout) on the same inputs before timing. Timing: ``triton.testing.do_bench`` median; memory in
a separate pass. FLOPs count non-zero blocks only: 4*B*H*nnz*b^2*D forward, backward 2.5x.
Each case is also replayed from a CUDA graph (``do_bench_cudagraph``: GPU time without host
overhead, L2 not flushed) for ours, Flex and FLASH alike. "ours" is ``blocksparse_attention`` as
a user calls it (``backend="auto"``: the Hopper kernels on sm90 where they take the case; set
SPARSECLI_ATTENTION_BACKEND=triton to time the portable kernels alone); the Hopper kernels are
also timed forced (``backend="hopper"``, ``hopper`` columns) where they take the case.

    python scripts/bench_attention.py [--cases SUBSTR ...] [--out FILE]
    python scripts/bench_attention.py --ours-only --out OLD.json  # run once per tree (PYTHONPATH),
    python scripts/bench_attention.py --compare-ours OLD.json NEW.json  # then compare them

GQA, head dims, decode and the compiled step: ``bench_features.py``; tile sweeps: ``tune_tiles.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

import torch
import triton
from torch.nn.attention import SDPBackend, sdpa_kernel

from attention_cases import H, Case, cases, dump, env, make_layout, peak_mib, rel, step, warm_gpu  # noqa: F401
from sparsecli.kernels import blocksparse_attention

def run_case(c: Case, check=True, warm_only=False):
    lay = make_layout(c.layout, c.block, c.S).cuda()
    nnz = int(lay.sum())  # over all H heads
    q, k, v = (torch.randn(c.B, H, c.S, c.D, device="cuda", dtype=c.dtype,
                           requires_grad=c.mode == "fwdbwd") for _ in range(3))
    dout = torch.randn_like(q)
    ours = lambda q, k, v: blocksparse_attention(q, k, v, lay, c.block)  # noqa: E731
    from sparsecli import to_block_mask  # here, not at the top: --ours-only runs on trees without it
    from sparsecli.bench.flex import flex_attention_call

    bm = to_block_mask(lay, c.block, c.S)
    flex = lambda q, k, v: flex_attention_call(q, k, v, bm, None, "TRITON")  # noqa: E731

    def flash(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    if warm_only:  # compile ours and Flex (inductor's on-disk cache serves the timing process)
        for fn in (ours, flex):
            step(fn, q, k, v, dout, c.mode)()
        return None
    row = dict(case_id=c.case_id, **{k_: (str(v_) if k_ == "dtype" else v_) for k_, v_ in asdict(c).items()})
    row["density"] = nnz / (H * (c.S // c.block) ** 2)
    if check:
        with torch.no_grad():
            want = flash(q, k, v) if c.layout == "dense" else flex(q, k, v)
            row["rel_err_vs_baseline"] = rel(ours(q, k, v), want)
    flops = 4 * c.B * nnz * c.block**2 * c.D * (3.5 if c.mode == "fwdbwd" else 1.0)
    dense_flops = 4 * c.B * H * c.S**2 * c.D * (3.5 if c.mode == "fwdbwd" else 1.0)
    for name, fn, fl in (("ours", ours, flops), ("flex", flex, flops), ("flash", flash, dense_flops)):
        ms = triton.testing.do_bench(step(fn, q, k, v, dout, c.mode), warmup=50, rep=200,
                                     return_mode="median")
        row[f"{name}_ms"] = ms
        row[f"{name}_tflops"] = fl / ms / 1e9
        if c.mode == "fwdbwd":
            row[f"{name}_peak_mib"] = peak_mib(step(fn, q, k, v, dout, c.mode))
    row["ours_over_flex"] = row["ours_ms"] / row["flex_ms"]
    row["ours_over_flash"] = row["ours_ms"] / row["flash_ms"]
    _time_hopper(row, c, lay, q, k, v, dout, flops, ours if check else None)
    # The same calls replayed from a CUDA graph: GPU time alone. Short calls whose host work
    # (Python, autograd, Triton's launcher) outlasts their GPU work are timed at host speed by
    # do_bench, and that speed differs between machines (perf notes, runs 11-15).
    for name, fn in (("ours", ours), ("flex", flex), ("flash", flash)):
        try:
            row[f"{name}_graph_ms"] = triton.testing.do_bench_cudagraph(
                step(fn, q, k, v, dout, c.mode), rep=100, return_mode="median")
        except Exception as e:  # a provider that cannot be captured says so in the JSON
            row[f"{name}_graph_ms"] = None
            row[f"{name}_graph_error"] = f"{type(e).__name__}: {str(e)[:200]}"
    if row["ours_graph_ms"] and row["flex_graph_ms"]:
        row["graph_ours_over_flex"] = row["ours_graph_ms"] / row["flex_graph_ms"]
    if row["ours_graph_ms"] and row["flash_graph_ms"]:
        row["graph_ours_over_flash"] = row["ours_graph_ms"] / row["flash_graph_ms"]
    return row


def _time_hopper(row, c, lay, q, k, v, dout, flops, ours):
    """The Hopper (Gluon) kernels (``backend="hopper"``) on the same inputs, where they take the
    case (else the row says why); checked against our Triton path first. The full peer table
    (Flex FLASH = FA4, FA4 dense, cuDNN) is ``scripts/hopper_check.py``."""
    try:
        fn = lambda q, k, v: blocksparse_attention(q, k, v, lay, c.block, backend="hopper")  # noqa: E731
        with torch.no_grad():
            got = fn(q, k, v)
    except TypeError:  # a tree before the dispatch (--ours-only)
        return
    except ValueError as e:  # the Hopper kernels do not take this case: the reason
        row["hopper_error"] = str(e)
        return
    if ours is not None:
        with torch.no_grad():
            row["hopper_rel_err_vs_ours"] = rel(got, ours(q, k, v))
    row["hopper_ms"] = triton.testing.do_bench(step(fn, q, k, v, dout, c.mode), warmup=50, rep=200,
                                               return_mode="median")
    row["hopper_tflops"] = flops / row["hopper_ms"] / 1e9
    row["hopper_over_flex"] = row["hopper_ms"] / row["flex_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=[], help="keep cases whose id contains any of these")
    ap.add_argument("--warm-only", action="store_true", help="compile (a shard of) the cases, do not time")
    ap.add_argument("--shard", default="0/1", help="with --warm-only: I/N, this process's share")
    ap.add_argument("--ours-only", action="store_true", help="time only our kernel (any tree on PYTHONPATH)")
    ap.add_argument("--compare-ours", nargs=2, metavar=("OLD", "NEW"), help="two --ours-only JSONs")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "bench_attention.json"))
    args = ap.parse_args()
    if args.compare_ours:
        return compare_ours(*args.compare_ours)
    torch._dynamo.config.cache_size_limit = 64
    torch._dynamo.config.automatic_dynamic_shapes = False  # Flex compiled per shape, as users run it
    pool = cases()
    # In the order of the patterns given (cases a cut-short run must reach first go first).
    selected = pool if not args.cases else list(dict.fromkeys(c for w in args.cases for c in pool if w in c.case_id))
    shard = tuple(int(x) for x in args.shard.split("/"))
    if args.warm_only:
        for c in selected[shard[0]::shard[1]]:
            ours_only(c, warm_only=True) if args.ours_only else run_case(c, warm_only=True)
        return
    warm_gpu()
    if args.ours_only:
        ours_only(selected[0])  # throwaway first case (see below)
        dump(args.out, [ours_only(c) for c in selected])
        return
    rows = []
    # A throwaway first case: the first one a process times ran up to 40% slow even after
    # warm_gpu (run 13), the host side of the first calls included.
    if selected:
        run_case(selected[0], check=False)
    for c in selected:
        rows.append(run_case(c))
        r = rows[-1]
        print(f"{c.case_id:42s} ours {r['ours_ms']:8.3f} ms {r['ours_tflops']:6.0f} TF/s | "
              f"flex x{r['ours_over_flex']:.2f} flash x{r['ours_over_flash']:.2f} "
              f"err {r['rel_err_vs_baseline']:.1e}", file=sys.stderr, flush=True)
        dump(args.out, rows)  # after every case: a run cut short keeps what it measured
    print_table(rows)


# ---- before/after: our kernel alone on the cases above, one process per source tree ----------

def ours_only(c: Case, warm_only=False):
    """Our median and CUDA-graph time on case ``c``: uses only the public function, so a tree
    from before any change can be timed by the same script (PYTHONPATH)."""
    lay = make_layout(c.layout, c.block, c.S).cuda()
    q, k, v = (torch.randn(c.B, H, c.S, c.D, device="cuda", dtype=c.dtype, requires_grad=c.mode == "fwdbwd")
               for _ in range(3))
    run = step(lambda q, k, v: blocksparse_attention(q, k, v, lay, c.block), q, k, v, torch.randn_like(q), c.mode)
    run()
    if warm_only:
        return None
    row = dict(case_id=c.case_id, ms=triton.testing.do_bench(run, warmup=25, rep=200, return_mode="median"),
               graph_ms=triton.testing.do_bench_cudagraph(run, rep=100, return_mode="median"))
    print(f"{c.case_id:44s} {row['ms']:8.4f} ms  graph {row['graph_ms']:8.4f} ms", file=sys.stderr, flush=True)
    return row


def compare_ours(old_path, new_path):
    """Per case: new time over old (median and graph replay); the worst, and the cases > 1.03."""
    old, new = ({r["case_id"]: r for r in json.load(open(p))["results"]} for p in (old_path, new_path))
    print(f"{'case':44s} {'old ms':>8s} {'new ms':>8s} {'new/old':>7s} {'graph new/old':>13s}")
    worst = []
    for cid, n in new.items():
        if cid not in old:
            continue
        o = old[cid]
        r, g = n["ms"] / o["ms"], n["graph_ms"] / o["graph_ms"]
        worst.append((min(r, g), r, g, cid))
        print(f"{cid:44s} {o['ms']:8.4f} {n['ms']:8.4f} {r:7.3f} {g:13.3f}{'  <-- > 1.03' if min(r, g) > 1.03 else ''}")
    if worst:
        print(f"worst new/old (the better of median and graph per case): {max(worst)[0]:.3f} ({max(worst)[3]})")


def print_table(rows):
    print(f"{'case':44s} {'ours ms':>8s} {'TF/s':>5s} {'flex ms':>8s} {'TF/s':>5s} {'flash ms':>8s} "
          f"{'/flex':>5s} {'/flash':>6s} {'graph ms o/f':>14s} {'g/flex':>6s} {'g/flash':>7s} "
          f"{'peakMiB o/f/fl':>16s} {'hopper ms':>9s} {'/flex':>5s} target")

    def opt(v, fmt):
        return format(v, fmt) if v is not None else "n/a"

    for r in rows:
        mem = "" if "ours_peak_mib" not in r else \
            f"{r['ours_peak_mib']:.0f}/{r['flex_peak_mib']:.0f}/{r['flash_peak_mib']:.0f}"
        graph = f"{opt(r.get('ours_graph_ms'), '.3f')}/{opt(r.get('flex_graph_ms'), '.3f')}"
        print(f"{r['case_id']:44s} {r['ours_ms']:8.3f} {r['ours_tflops']:5.0f} {r['flex_ms']:8.3f} "
              f"{r['flex_tflops']:5.0f} {r['flash_ms']:8.3f} {r['ours_over_flex']:5.2f} "
              f"{r['ours_over_flash']:6.2f} {graph:>14s} {opt(r.get('graph_ours_over_flex'), '6.2f'):>6s} "
              f"{opt(r.get('graph_ours_over_flash'), '7.2f'):>7s} {mem:>16s} {opt(r.get('hopper_ms'), '9.3f'):>9s} "
              f"{opt(r.get('hopper_over_flex'), '5.2f'):>5s} {r['target']}")


if __name__ == "__main__":
    main()
