"""Features table: GQA vs MHA, head dims 96/256 vs 128, decode vs FlexAttention, and a compiled
GQA model step vs eager.

    python scripts/bench_features.py [--parts gqa head_dim decode model_step] [--out FILE]
    python scripts/bench_features.py --warm-only [--parts ...] [--shard I/N]   # compile, time nothing

Every row checks its output on the same inputs before timing (against MHA with repeated K/V, the
PyTorch reference on one (batch, head) slice, Flex, or eager). Times are ``do_bench`` medians and
CUDA-graph replays (GPU time without host overhead); TF/s count non-zero blocks with the real D.
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
import triton
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from attention_cases import dump, make_layout, rel, step, warm_gpu
from sparsecli.kernels import blocksparse_attention, blocksparse_attention_reference

BF16 = torch.bfloat16


def _time(fn):
    """(do_bench median ms, CUDA-graph replay median ms or None)."""
    ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    try:
        graph = triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")
    except Exception as e:  # noqa: BLE001 - a capture failure is reported, not fatal
        print(f"  graph capture failed: {type(e).__name__}: {str(e)[:120]}", file=sys.stderr)
        graph = None
    return ms, graph


def _qkv(B, Hq, Hkv, Sq, Sk, D, grad):
    q = torch.randn(B, Hq, Sq, D, device="cuda", dtype=BF16, requires_grad=grad)
    k, v = (torch.randn(B, Hkv, Sk, D, device="cuda", dtype=BF16, requires_grad=grad) for _ in range(2))
    return q, k, v


def gqa_rows():
    """GQA (Hq 32, Hkv 8) against the same layout as MHA (Hq 32): target time <= 1.0x."""
    rows = []
    for kind in ("bigbird", "sliding"):
        lay = make_layout(kind, 128, 8192, heads=32).cuda()
        for mode in ("fwd", "fwdbwd"):
            grad = mode == "fwdbwd"
            q, k, v = _qkv(2, 32, 8, 8192, 8192, 128, grad)
            k32, v32 = (t.detach().repeat_interleave(4, 1).requires_grad_(grad) for t in (k, v))
            fn = lambda q, k, v: blocksparse_attention(q, k, v, lay, 128)  # noqa: E731
            with torch.no_grad():
                err = rel(fn(q, k, v), fn(q, k32, v32))
            dout = torch.randn_like(q)
            gqa, gqa_g = _time(step(fn, q, k, v, dout, mode))
            mha, mha_g = _time(step(fn, q, k32, v32, dout, mode))
            rows.append(dict(case_id=f"gqa-{kind}-b128-S8192-B2-Hq32-Hkv8-D128-bf16-{mode}", gqa_ms=gqa,
                             mha_ms=mha, gqa_over_mha=gqa / mha, gqa_graph_ms=gqa_g, mha_graph_ms=mha_g,
                             graph_gqa_over_mha=gqa_g / mha_g if gqa_g and mha_g else None, rel_err_vs_mha=err))
            _print(rows[-1])
    return rows


HEAD_DIM_RUNS = [(mode, D, backend) for mode in ("fwd", "fwdbwd")
                 for D, backend in ((128, "auto"), (128, "triton"), (96, "auto"), (256, "auto"))]


def head_dim_rows(warm_only=False, shard=(0, 1)):
    """D96 and D256 TF/s as a fraction of D128 (targets >= 0.8 and >= 0.7), sliding b128. D128 as
    a user calls it (backend "auto": the Hopper kernels on sm90) and on the portable Triton
    kernels that run D96 and D256 (``tflops_over_d128_triton``). ``warm_only``: compile a shard
    of the runs."""
    rows, lay, base = [], make_layout("sliding", 128, 8192).cuda(), {}
    nnz = int(lay.sum())
    for i, (mode, D, backend) in enumerate(HEAD_DIM_RUNS):
        if warm_only and i % shard[1] != shard[0]:
            continue
        q, k, v = _qkv(4, 16, 16, 8192, 8192, D, mode == "fwdbwd")
        fn = lambda q, k, v: blocksparse_attention(q, k, v, lay, 128, backend=backend)  # noqa: E731
        run = step(fn, q, k, v, torch.randn_like(q), mode)
        if warm_only:
            run()
            continue
        with torch.no_grad():  # one (batch, head) slice against the PyTorch reference
            err = rel(fn(q, k, v)[:1, :1], blocksparse_attention_reference(
                q[:1, :1], k[:1, :1], v[:1, :1], lay[:1], 128, compute_dtype=torch.float32))
        ms, graph = _time(run)
        tflops = 4 * 4 * nnz * 128**2 * D * (3.5 if mode == "fwdbwd" else 1.0) / ms / 1e9
        if D == 128:
            base[mode, backend] = tflops
        name = f"D{D}" + ("-triton" if backend == "triton" else "")
        rows.append(dict(case_id=f"headdim-sliding-b128-S8192-B4-H16-{name}-bf16-{mode}", ms=ms, graph_ms=graph,
                         tflops=tflops, tflops_over_d128=tflops / base[mode, "auto"],
                         tflops_over_d128_triton=tflops / base.get((mode, "triton"), float("nan")),
                         rel_err_vs_reference=err))
        _print(rows[-1])
    return rows


def decode_rows():
    """One query (Sq 1) against a 32k cache, BigBird's last row, B 16, Hq 32, Hkv 8: vs Flex."""
    S, block, B = 32768, 128, 16
    lay = make_layout("bigbird", block, S, heads=32)[:, -1:, :].contiguous().cuda()  # (32, 1, 256)
    q, k, v = _qkv(B, 32, 8, 1, S, 128, False)
    ours = lambda: blocksparse_attention(q, k, v, lay, block)  # noqa: E731
    # Flex on the same pattern: the single query sits at the cache's end, key block j kept if set.
    bm = create_block_mask(lambda b, h, q_idx, kv_idx: lay[h, 0, kv_idx // block] != 0, None, 32, 1, S,
                           device="cuda", BLOCK_SIZE=block)
    flex = torch.compile(flex_attention)
    flex_fn = lambda: flex(q, k, v, block_mask=bm, enable_gqa=True)  # noqa: E731
    err = rel(ours(), flex_fn())
    o_ms, o_g = _time(ours)
    f_ms, f_g = _time(flex_fn)
    row = dict(case_id="decode-bigbird-b128-Sq1-Sk32768-B16-Hq32-Hkv8-D128-bf16", ours_ms=o_ms, flex_ms=f_ms,
               ours_over_flex=o_ms / f_ms, ours_graph_ms=o_g, flex_graph_ms=f_g,
               graph_ours_over_flex=o_g / f_g if o_g and f_g else None, rel_err_vs_flex=err)
    _print(row)
    return [row]


class _GQABlock(torch.nn.Module):
    """Projections + block-sparse GQA attention + output projection: one model layer's attention."""

    def __init__(self, hidden, Hq, Hkv, D, layout, block):
        super().__init__()
        self.Hq, self.Hkv, self.D, self.block = Hq, Hkv, D, block
        self.wq = torch.nn.Linear(hidden, Hq * D, bias=False)
        self.wkv = torch.nn.Linear(hidden, 2 * Hkv * D, bias=False)
        self.wo = torch.nn.Linear(Hq * D, hidden, bias=False)
        self.register_buffer("layout", layout)

    def forward(self, x):
        B, S, _ = x.shape
        q = self.wq(x).view(B, S, self.Hq, self.D).transpose(1, 2)
        k, v = self.wkv(x).view(B, S, 2, self.Hkv, self.D).permute(2, 0, 3, 1, 4)
        out = blocksparse_attention(q, k, v, self.layout, self.block, causal=True)
        return self.wo(out.transpose(1, 2).reshape(B, S, -1))


def model_step_rows(warm_only=False):
    """A GQA attention layer's forward + backward, torch.compile(fullgraph=True) vs eager."""
    torch._dynamo.reset()
    lay = make_layout("sliding", 128, 4096, heads=32).cuda()
    model = _GQABlock(4096, 32, 8, 128, lay, 128).cuda().to(BF16)
    x = torch.randn(2, 4096, 4096, device="cuda", dtype=BF16)
    params = list(model.parameters())

    def run(m):
        return torch.autograd.grad(m(x).float().square().mean(), params)

    compiled = torch.compile(model, fullgraph=True)
    want, got = run(model), run(compiled)
    if warm_only:  # inductor's and Triton's caches now hold the compiled graph and kernels
        return []
    err = max(rel(a, b) for a, b in zip(got, want))
    e_ms, e_g = _time(lambda: run(model))
    c_ms, c_g = _time(lambda: run(compiled))
    row = dict(case_id="model-step-gqa-sliding-b128-S4096-B2-Hq32-Hkv8-D128-bf16", eager_ms=e_ms, compiled_ms=c_ms,
               compiled_over_eager=c_ms / e_ms, eager_graph_ms=e_g, compiled_graph_ms=c_g,
               graph_compiled_over_eager=c_g / e_g if c_g and e_g else None, rel_err_grads=err)
    _print(row)
    return [row]


PARTS = {"gqa": lambda warm, shard: gqa_rows(), "head_dim": head_dim_rows,
         "decode": lambda warm, shard: decode_rows(), "model_step": lambda warm, shard: model_step_rows(warm)}


def feature_rows(parts=None, warm_only=False, on_rows=None, shard=(0, 1)):
    """The rows of ``parts`` (names of ``PARTS``, default all; ``on_rows(rows)`` after each);
    ``warm_only`` compiles what the head-dim (a ``shard`` of its runs) and model-step parts run
    (the others are cheap to compile) and times nothing."""
    rows = []
    for name in parts or PARTS:
        if warm_only and name not in ("head_dim", "model_step"):
            continue
        try:
            rows += PARTS[name](warm_only, shard)
        except Exception as e:  # noqa: BLE001 - a failing part says why in the JSON
            rows.append(dict(case_id=name, error=f"{type(e).__name__}: {str(e)[:300]}"))
            _print(rows[-1])
        if on_rows:
            on_rows(rows)
    return rows


def _print(row):
    print("  " + " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
          file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="*", choices=tuple(PARTS), help="the parts to run (default all)")
    ap.add_argument("--warm-only", action="store_true", help="compile what the parts run, time nothing")
    ap.add_argument("--shard", default="0/1", help="with --warm-only: I/N, this process's share")
    ap.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "bench_features.json"))
    args = ap.parse_args()
    torch._dynamo.config.cache_size_limit = 64
    torch._dynamo.config.automatic_dynamic_shapes = False  # Flex compiled per shape, as users run it
    shard = tuple(int(x) for x in args.shard.split("/"))
    if args.warm_only:
        return feature_rows(args.parts, warm_only=True, shard=shard)
    warm_gpu()
    dump(args.out, feature_rows(args.parts, on_rows=lambda rows: dump(args.out, rows)))


if __name__ == "__main__":
    main()
