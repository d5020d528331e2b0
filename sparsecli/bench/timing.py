"""Measuring one callable: correctness against a reference, peak memory, and time.

Order per row: check (fresh outputs compared with a high-precision reference on the same inputs),
then one memory pass, then timing. Timing is ``triton.testing.do_bench``, which flushes L2
before every repetition, so inputs need no rotation; its warm-up and repetition budgets are in
milliseconds, and we ask for the median with p20/p80.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

QUANTILES = (0.5, 0.2, 0.8)
# Norm-relative error a correct kernel stays under, per input dtype (fp32 runs tf32-class dots).
MAX_REL_ERR = {"fp32": 2e-3, "fp16": 1e-2, "bf16": 3e-2}
REF_MEMORY_FRACTION = 0.4  # of the free device memory, for one chunk of the reference
REF_BYTES_PER_SCORE = 24  # fp32 scores, probabilities and their gradients held by autograd


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float


@dataclass(frozen=True)
class TimingConfig:
    warmup_ms: int = 100
    rep_ms: int = 500


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def do_bench(fn: Callable[[], object], cfg: TimingConfig) -> Timing:
    import triton.testing

    median, p20, p80 = triton.testing.do_bench(fn, warmup=cfg.warmup_ms, rep=cfg.rep_ms,
                                               quantiles=list(QUANTILES))
    return Timing(median, p20, p80)


def host_ms(fn: Callable[[], object], device) -> float:
    """Wall time of one call, synchronized on both sides (for one-off costs, not for kernels)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return (time.perf_counter() - t0) * 1e3


def peak_memory_mib(fn: Callable[[], object], device) -> float | None:
    """Peak allocation of one call above what was allocated before it, in MiB (CUDA only).

    Inputs and the provider's persistent state (masks, index tables, a saved graph for the
    bwd pass) were allocated before, so this is the call's own workspace and outputs.
    """
    if torch.device(device).type != "cuda":
        return None
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


# -- correctness ------------------------------------------------------------------------------

def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """||got - want|| / ||want|| in float64; NaN or Inf in ``got`` gives inf (never passes)."""
    g = got.detach().double()
    if not bool(torch.isfinite(g).all()):
        return float("inf")
    w = want.double()
    return float((g - w).norm() / w.norm().clamp_min(1e-30))


@dataclass
class Reference:
    out: torch.Tensor
    grads: tuple | None  # (dq, dk, dv), None when no pass needs them


def reference_fits(shape_heads_seq: tuple[int, int], device) -> bool:
    """Whether one (batch, head) slice of the dense-math reference fits in device memory."""
    _, S = shape_heads_seq
    need = REF_BYTES_PER_SCORE * S * S
    if torch.device(device).type != "cuda":
        return need < 8 * 2**30
    free, _ = torch.cuda.mem_get_info(device)
    return need < REF_MEMORY_FRACTION * free


def reference(q, k, v, dout, layout, block, causal, sm_scale, with_grads: bool) -> Reference:
    """Dense-math reference in fp32 (fp64 on the CPU), chunked over batch and heads to fit."""
    from ..kernels.reference import blocksparse_attention_reference

    B, H, S, D = q.shape
    dt = torch.float64 if q.device.type == "cpu" else torch.float32
    per_slice = REF_BYTES_PER_SCORE * S * S
    if q.device.type == "cuda":
        budget = REF_MEMORY_FRACTION * torch.cuda.mem_get_info(q.device)[0]
    else:
        budget = 8 * 2**30
    heads_per_chunk = max(1, min(H, int(budget // per_slice)))
    out = torch.empty(q.shape, dtype=dt, device=q.device)
    grads = tuple(torch.empty_like(out) for _ in range(3)) if with_grads else None
    for b in range(B):
        for h0 in range(0, H, heads_per_chunk):
            hs = slice(h0, min(H, h0 + heads_per_chunk))
            lay = layout[hs] if layout.shape[0] > 1 else layout
            qs, ks, vs = (t[b:b + 1, hs].detach().to(dt).requires_grad_(with_grads) for t in (q, k, v))
            with torch.set_grad_enabled(with_grads):
                o = blocksparse_attention_reference(qs, ks, vs, lay, block, causal=causal,
                                                    sm_scale=sm_scale, compute_dtype=dt)
            out[b:b + 1, hs] = o.detach()
            if with_grads:
                gq, gk, gv = torch.autograd.grad(o, (qs, ks, vs), dout[b:b + 1, hs].to(dt))
                for dst, g in zip(grads, (gq, gk, gv)):
                    dst[b:b + 1, hs] = g
            del o, qs, ks, vs
    return Reference(out, grads)
