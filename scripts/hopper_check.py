"""Issue 12 on the H200: the Hopper (Gluon) path against ours-Triton and the peers, one table.

Every provider's output (and, for fwd+bwd, its gradients) is checked against a float64 reference
on a slice of the same inputs (batch 0, two heads) before it is timed; a provider that is missing
or fails says so in its row. Times are ``triton.testing.do_bench`` medians; TF/s count non-zero
blocks only (4*B*nnz*b^2*D forward, 3.5x that forward+backward). Layouts are the ones of
../shared/reference/hopper-kernels.md (block 128, H 16, B*S = 65,536 tokens).

    python scripts/hopper_check.py [--cases SUBSTR ...] [--providers NAME ...] [--out FILE]

Providers: hopper (``blocksparse_attention(..., backend="hopper")``, the default variant),
hopper-q2 / hopper-plain / hopper-defer (other forward loops: second Q buffer, plain loop, O's
rescale deferred to the next PV as in FA3), hopper-1cta (one CTA per program instead of
persistent CTAs), hopper-nondet (``deterministic=False``: dQ reduce-added from the dK/dV
kernel), triton (ours, ``backend="triton"``),
flex-triton, flex-flash (FlexAttention BACKEND="FLASH" = FlashAttention-4, layout as a mask_mod
through create_block_mask), fa4-sparse / fa4-sparse-det (FlashAttention-4 called directly with
the layout as full blocks, ``sparsecli/bench/fa4_sparse.py``; -det: its deterministic backward),
fa4-dense, cudnn-dense. Rows say which backward ran (``backward``), and the table compares each
row with the faster of flex-flash and fa4-sparse (``best-fa4``). ``--profile CASE`` runs one call of the
default Hopper variant and nothing else (for ncu).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

import torch
import triton

from sparsecli import (BigBirdSparsityConfig, DenseSparsityConfig, FixedSparsityConfig,
                       LocalSlidingWindowSparsityConfig)
from sparsecli.bench.fa4_sparse import fa4_sparse_attention
from sparsecli.bench.providers import Unavailable, flash_attn_4
from sparsecli.kernels import blocksparse_attention
from sparsecli.kernels.fused.backend import backward_kind
from sparsecli.kernels.hopper import launch
from sparsecli.kernels.reference import blocksparse_attention_reference

from attention_cases import warm_gpu  # this folder: the same warm-up as the kernel bench

H, BLOCK, TOKENS = 16, 128, 65536
TOL = {"fwd": 1.5e-2, "bwd": 3e-2}  # bf16 bounds of the kernel tests (out, gradients)


@dataclass(frozen=True)
class Case:
    layout: str
    S: int
    D: int
    mode: str  # fwd / fwdbwd
    dtype: torch.dtype = torch.bfloat16

    @property
    def B(self):
        return TOKENS // self.S

    @property
    def case_id(self):
        dt = "bf16" if self.dtype == torch.bfloat16 else "fp16"
        return f"{self.layout}-S{self.S}-B{self.B}-D{self.D}-{dt}-{self.mode}"


def cases():
    out = []
    for D in (128, 64):
        for lay, S in (("sliding", 8192), ("fixed", 8192), ("bigbird", 16384), ("dense", 8192)):
            for mode in ("fwd", "fwdbwd"):
                out.append(Case(lay, S, D, mode))
    out += [Case("sliding", 8192, 128, m, torch.float16) for m in ("fwd", "fwdbwd")]
    return out


def make_layout(kind, S):
    import random

    random.seed(0)
    cfg = {"sliding": lambda: LocalSlidingWindowSparsityConfig(H, BLOCK, num_sliding_window_blocks=7,
                                                                         attention="bidirectional"),
           "fixed": lambda: FixedSparsityConfig(H, BLOCK, num_local_blocks=4, num_global_blocks=1),
           "bigbird": lambda: BigBirdSparsityConfig(H, BLOCK, num_random_blocks=3,
                                                    num_sliding_window_blocks=3, num_global_blocks=2),
           "dense": lambda: DenseSparsityConfig(H, BLOCK)}[kind]()
    return cfg.make_layout(S)


# Hopper variants: (forward loop of variants.FWD_LOOPS, persistent CTAs); "hopper" is the default.
HOPPER = {"hopper": (None, True), "hopper-nondet": (None, True), "hopper-q2": ((True, True, 2, False), True),
          "hopper-plain": ((False, False, 1, False), True), "hopper-defer": ((True, True, 1, True), True),
          "hopper-1cta": (None, False)}
# The backward each provider runs (rows and JSON say it).
BACKWARD = {"hopper-nondet": backward_kind("hopper", False)[0], "triton": backward_kind("triton", True)[0],
            "flex-flash": "fa4-dq-atomic", "fa4-sparse": "fa4-dq-atomic", "fa4-dense": "fa4-dq-atomic",
            "fa4-sparse-det": "fa4-deterministic", "flex-triton": "flex-triton", "cudnn-dense": "cudnn"}
FWD_ONLY = ("hopper-q2", "hopper-plain", "hopper-defer")  # the backward does not depend on the forward loop
BWD_ONLY = ("hopper-nondet", "fa4-sparse-det")  # the same forward as hopper / fa4-sparse


def providers(c: Case, lay, names):
    """name -> (callable(q, k, v) or None, reason when None) for the ``names`` asked for, in the
    order of ``PROVIDERS``. Inputs are (B, H, S, D)."""
    def make(name):
        if name in HOPPER:  # run_case sets the variant's knobs around its check and timing
            det = name != "hopper-nondet"
            return (lambda q, k, v: blocksparse_attention(q, k, v, lay, BLOCK, backend="hopper",
                                                          deterministic=det)), None
        if name == "triton":
            return (lambda q, k, v: blocksparse_attention(q, k, v, lay, BLOCK, backend="triton")), None
        if name.startswith("flex"):
            return _flex(lay, c, "FLASH" if name == "flex-flash" else None)
        if name.startswith("fa4-sparse"):
            return _fa4_sparse(lay, c, deterministic=name == "fa4-sparse-det")
        return (_sdpa_cudnn, None) if name == "cudnn-dense" else _fa4_dense()
    return {name: make(name) for name in PROVIDERS if name in names}


# The order a case measures them in (a run cut short keeps the ones that matter most).
PROVIDERS = (*HOPPER, "triton", "flex-flash", "fa4-sparse", "fa4-sparse-det", "fa4-dense", "cudnn-dense",
             "flex-triton")


def _sdpa_cudnn(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def _flex(lay, c, backend):
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
    except ImportError as e:
        return None, f"no flex_attention: {e}"
    if backend == "FLASH":
        try:
            import flash_attn.cute  # noqa: F401
        except Exception as e:
            return None, f"flash-attn-4 not importable ({type(e).__name__})"
    lay_d = lay.to("cuda").bool()

    # Every layout block is a full 128-block; the mask_mod (a lookup of the layout) must still be
    # non-trivial: with none, the FLASH backend of torch 2.11 silently computes dense attention
    # (pytorch#188322). from_kv_blocks builds the mask from the layout directly: create_block_mask
    # compiles a mask evaluation per shape, over a minute per case on the H200 (run 4).
    def mask_mod(b, h, q_idx, kv_idx):
        return lay_d[h, q_idx // BLOCK, kv_idx // BLOCK]

    full_num = lay_d.sum(-1, dtype=torch.int32)[None]
    full_idx = torch.sort((~lay_d).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)[None]
    bm = BlockMask.from_kv_blocks(torch.zeros_like(full_num), torch.zeros_like(full_idx), full_num, full_idx,
                                  BLOCK_SIZE=BLOCK, mask_mod=mask_mod, seq_lengths=(c.S, c.S))
    opts = {"BACKEND": backend} if backend else None
    fn = torch.compile(flex_attention)
    return (lambda q, k, v: fn(q, k, v, block_mask=bm, kernel_options=opts)), None


def _fa4_sparse(lay, c, deterministic):
    try:
        cute = flash_attn_4()
    except Unavailable as e:
        return None, str(e)
    return fa4_sparse_attention(cute, lay.to("cuda"), BLOCK, c.D ** -0.5, deterministic=deterministic), None


def _fa4_dense():
    try:
        from flash_attn.cute import flash_attn_func
    except Exception as e:
        return None, f"flash-attn-4 not importable ({type(e).__name__})"

    def run(q, k, v):  # FA4 takes (B, S, H, D); the transposes are views, its kernel reads strides
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = out[0] if isinstance(out, tuple) else out
        return out.transpose(1, 2)
    return run, None


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check(fn, q, k, v, dout, lay, mode, dense):
    """Max relative error of out (and grads) on batch 0, heads 0-1, against float64."""
    sl = (slice(0, 1), slice(0, 2))
    x = [t[sl].detach().double().requires_grad_() for t in (q, k, v)]
    ref_lay = torch.ones_like(lay[:2]) if dense else lay[:2]
    ref = blocksparse_attention_reference(*x, ref_lay, BLOCK, compute_dtype=torch.float64)
    if mode == "fwd":
        with torch.no_grad():
            out = fn(q, k, v)[sl]
        errs = {"out": rel(out, ref)}
        if not dense and errs["out"] > TOL["fwd"]:  # what did it compute instead?
            with torch.no_grad():
                dense_ref = blocksparse_attention_reference(*x, torch.ones_like(lay[:2]), BLOCK,
                                                            compute_dtype=torch.float64)
            errs["out_vs_dense"] = rel(out, dense_ref)
        return errs
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    out = fn(qg, kg, vg)
    grads = torch.autograd.grad(out, (qg, kg, vg), dout)
    ref_grads = torch.autograd.grad(ref, x, dout[sl].double())
    errs = {"out": rel(out.detach()[sl], ref)}
    errs.update({n: rel(g[sl], r) for n, g, r in zip(("dq", "dk", "dv"), grads, ref_grads)})
    return errs


def run_case(c: Case, names, dense_rows):
    lay = make_layout(c.layout, c.S)
    nnz = int(lay.sum())
    q, k, v, dout = (torch.randn(c.B, H, c.S, c.D, device="cuda", dtype=c.dtype) for _ in range(4))
    flops = 4 * c.B * nnz * BLOCK**2 * c.D * (3.5 if c.mode == "fwdbwd" else 1.0)
    dense_flops = 4 * c.B * H * c.S**2 * c.D * (3.5 if c.mode == "fwdbwd" else 1.0)
    rows = {}
    todo = [n for n in names if not (n in FWD_ONLY and c.mode != "fwd") and not (n in BWD_ONLY and c.mode == "fwd")]
    for name in [n for n in todo if n.endswith("-dense")]:
        if name in dense_rows.get((c.S, c.D, c.mode, c.dtype), {}):
            rows[name] = dense_rows[(c.S, c.D, c.mode, c.dtype)][name]  # same shapes: measured once
            todo.remove(name)
    for name, (fn, why) in providers(c, lay, todo).items():
        dense = name.endswith("-dense")
        row = {"provider": name}
        if c.mode == "fwdbwd":
            row["backward"] = BACKWARD.get(name, backward_kind("hopper", True)[0])
        if fn is None:
            rows[name] = dict(row, error=why)
            continue
        try:
            with launch.variant(*HOPPER.get(name, (None, True))):  # forward and backward alike
                row["rel_err"] = check(fn, q, k, v, dout, lay, "fwd" if c.mode == "fwd" else "bwd", dense)
                tol = TOL["fwd" if c.mode == "fwd" else "bwd"]
                if row["rel_err"].get("out_vs_dense", 1.0) <= tol:
                    raise RuntimeError(f"computed dense attention, not the layout: {row['rel_err']}")
                if max(v for n, v in row["rel_err"].items() if n != "out_vs_dense") > tol:
                    raise RuntimeError(f"wrong result: {row['rel_err']} (bound {tol})")
                step = _step(fn, q, k, v, dout, c.mode)
                row["ms"] = triton.testing.do_bench(step, warmup=25, rep=100, return_mode="median")
            row["tflops"] = (dense_flops if dense else flops) / row["ms"] / 1e9
        except Exception as e:  # the row says why; the others still run
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        rows[name] = row
        if dense:
            dense_rows.setdefault((c.S, c.D, c.mode, c.dtype), {})[name] = row
        print(f"  {c.case_id:34s} {name:14s} " + (f"{row['ms']:8.3f} ms {row['tflops']:5.0f} TF/s"
              if "ms" in row else row.get("error", "")[:200]), file=sys.stderr, flush=True)
    return dict(case_id=c.case_id, layout=c.layout, S=c.S, B=c.B, D=c.D, mode=c.mode,
                density=nnz / (H * (c.S // BLOCK) ** 2), providers=rows)


def _step(fn, q, k, v, dout, mode):
    if mode == "fwd":
        return lambda: fn(q, k, v)
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))
    return lambda: torch.autograd.grad(fn(qg, kg, vg), (qg, kg, vg), dout)


BEST_FA4 = ("flex-flash", "fa4-sparse")  # FA4 through Flex or called directly: the faster one, per case


def best_fa4(ps):
    """(name, ms) of the faster FA4 block-sparse row of a case, or None."""
    timed = [(ps[n]["ms"], n) for n in BEST_FA4 if "ms" in ps.get(n, {})]
    return min(timed)[::-1] if timed else None


def print_table(rows):
    ref = ("flex-flash", "fa4-sparse", "fa4-sparse-det", "cudnn-dense")
    print(f"{'case':34s} {'provider':14s} {'ms':>8s} {'TF/s':>5s} {'/best-fa4':>10s} "
          + " ".join(f"{'/' + r:>15s}" for r in ref) + "  backward")
    for r in rows:
        ps = r["providers"]
        best = best_fa4(ps)
        for name, p in ps.items():
            if "ms" not in p:
                print(f"{r['case_id']:34s} {name:14s} {'-':>8s} {'':5s} {p.get('error', '')[:160]}")
                continue
            ratios = " ".join(f"{p['ms'] / ps[x]['ms']:15.2f}" if "ms" in ps.get(x, {}) else f"{'n/a':>15s}"
                              for x in ref)
            b = f"{p['ms'] / best[1]:10.2f}" if best else f"{'n/a':>10s}"
            print(f"{r['case_id']:34s} {name:14s} {p['ms']:8.3f} {p['tflops']:5.0f} {b} {ratios}  "
                  f"{p.get('backward', '')}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=[], help="keep cases whose id contains any of these")
    ap.add_argument("--mode", choices=("fwd", "fwdbwd"), help="only this pass")
    ap.add_argument("--providers", nargs="*",
                    default=["hopper", "hopper-nondet", "triton", "flex-triton", "flex-flash", "fa4-sparse",
                             "fa4-sparse-det", "fa4-dense", "cudnn-dense"])
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "hopper_check.json"))
    ap.add_argument("--append", action="store_true", help="add to the rows already in --out")
    ap.add_argument("--profile", help="one fwd(+bwd) call of the default Hopper variant on this case id")
    args = ap.parse_args()
    if args.profile:
        c = next(c for c in cases() if c.case_id == args.profile)
        fn = providers(c, make_layout(c.layout, c.S), ["hopper"])["hopper"][0]
        q, k, v, dout = (torch.randn(c.B, H, c.S, c.D, device="cuda", dtype=c.dtype) for _ in range(4))
        _step(fn, q, k, v, dout, c.mode)()
        torch.cuda.synchronize()
        return
    torch._dynamo.config.cache_size_limit = 64
    # In the order of the patterns given: the cases a cut-short run must reach go first.
    selected = list(dict.fromkeys(c for w in (args.cases or [""]) for c in cases()
                                  if w in c.case_id and args.mode in (None, c.mode)))
    warm_gpu()
    rows, dense_rows = [], {}
    if args.append and os.path.exists(args.out):
        with open(args.out) as f:
            rows = json.load(f)["results"]
    env = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__)
    for c in selected:
        rows.append(run_case(c, set(args.providers), dense_rows))
        with open(args.out, "w") as f:  # after every case: a run cut short keeps what it measured
            json.dump({"schema_version": 1, "env": env, "results": rows}, f, indent=1)
    print_table(rows)


if __name__ == "__main__":
    main()
