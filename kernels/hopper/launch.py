"""Host side of the Hopper kernels: TMA descriptors and launches for one call's plan.

The plan is the portable path's ``fused.plan._Plan`` built with ``backend="hopper"``: the same
argument checks (``fused.args``), layout cache and tile schedules (``lut.tile_schedule`` at the
Hopper tile shapes of ``variants.PLAN_TILES``, forward rows split as on the Triton path, whose
combine kernel merges them). ``fused.call`` calls ``forward``/``backward`` when the dispatch
(``fused.backend``) chose this path; tensors are contiguous CUDA ``(B, H, S, D)``.

``lse`` is in the portable kernels' convention: log2 units (m + log2(l) of the scores scaled by
``sm_scale * log2(e)``), +inf for a query with nothing to attend to.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import torch

from . import variants as V

LOG2E = 1.4426950408889634


@dataclass
class Knobs:
    """Which compiled variant a launch takes (benchmarks compare them; ``variant`` sets them)."""

    loop: tuple | None = None  # forward loop, one of variants.FWD_LOOPS (None: FWD_LOOPS[0])
    persistent: bool = True  # one CTA per SM walking the programs (else one CTA per program)


KNOBS = Knobs()


@contextlib.contextmanager
def variant(loop=None, persistent=True):
    """Calls inside run the given forward loop / CTA scheme (benchmarks and tests)."""
    old = (KNOBS.loop, KNOBS.persistent)
    KNOBS.loop, KNOBS.persistent = loop, persistent
    try:
        yield
    finally:
        KNOBS.loop, KNOBS.persistent = old


def _descriptor(x: torch.Tensor, rows: int):
    """Gluon TMA descriptor over ``x`` (B, H, S, D) as (B*H*S, D) rows, ``rows`` at a time.

    One validated template per geometry is copied and pointed at ``x``: building and validating a
    descriptor per call was the largest share of host time on the Triton path (perf notes, run 11).
    """
    template = _descriptor_template(x.numel() // x.shape[-1], x.shape[-1], x.dtype, rows)
    desc = object.__new__(type(template))
    desc.__dict__.update(template.__dict__, base=x)
    return desc


@functools.lru_cache(maxsize=256)
def _descriptor_template(n_rows: int, head_dim: int, dtype: torch.dtype, rows: int):
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    gl_dtype = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16, torch.float32: gl.float32}[dtype]
    layout = gl.NVMMASharedLayout.get_default_for([rows, head_dim], gl_dtype)
    base = torch.empty(0, dtype=dtype)
    return TensorDescriptor(base, [n_rows, head_dim], [head_dim, 1], [rows, head_dim], layout)


def _aligned(*xs):
    """TMA needs 16-byte aligned bases: a tensor at an odd offset into its storage is copied."""
    return tuple(x if x.data_ptr() % 16 == 0 else x.clone() for x in xs)


def _grid(num_programs, device, persistent):
    """One CTA per SM (each takes every G-th program of the heaviest-first list), or one per
    program. Shared memory allows one CTA per SM either way."""
    from ..fused.plan import _num_sms

    return (max(1, min(num_programs, _num_sms(device)) if persistent else num_programs),)


def forward(plan, q, k, v, *, out=None, lse=None):
    """(out, lse) of the block-sparse attention; ``out``/``lse`` may be given (tests poison them)."""
    from ..fused.fwd import _attn_fwd_combine
    from ._fwd import _attn_fwd_hopper

    q, k, v = _aligned(q, k, v)
    B, H, Sq, D = q.shape
    sch = plan.schedule("fwd")
    out = torch.empty_like(q) if out is None else out
    lse = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device) if lse is None else lse
    slots = max(sch.num_slots, 1)
    part_acc = part_ml = lse  # unused without split rows
    if sch.num_slots:
        part_acc = torch.empty((B, slots, 128, D), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((B, slots, 2, 128), dtype=torch.float32, device=q.device)
    pipeline, pingpong, q_bufs, defer = KNOBS.loop or V.FWD_LOOPS[0]
    _attn_fwd_hopper[_grid(B * sch.num_programs, q.device, KNOBS.persistent)](
        _descriptor(q, 64), _descriptor(k, V.BLOCK_N), _descriptor(v, V.BLOCK_N), _descriptor(out, 64),
        lse, part_acc, part_ml, slots, sch.programs, sch.seg_start, B * sch.num_programs, B, H, plan.group,
        Sq, plan.Sk, sch.num_outer, plan.sm_scale * LOG2E, HEAD_DIM=D, BLOCK_N=V.BLOCK_N,
        STAGES=V.FWD_STAGES[D], CAUSAL=plan.static.causal, PIPELINE=pipeline, PINGPONG=pingpong,
        Q_BUFS=q_bufs, DEFER_RESCALE=defer, num_warps=4, maxnreg=V.MAXNREG)
    if sch.num_split_rows:
        _attn_fwd_combine[(B * sch.num_split_rows,)](
            part_acc, part_ml, out, lse, sch.combine, slots, B, H, Sq, sch.num_outer,
            HEAD_DIM=D, D=D, BLOCK_M=128, EVEN=True)
    return out, lse


def backward(plan, q, k, v, out, lse, dout, dlse=None, *, grads=None, deterministic=True):
    """(dq, dk, dv). ``dlse``: gradient of the natural-log lse, or None. ``grads`` may give the
    three outputs.

    ``deterministic``: a dQ launch and a dK/dV launch, no atomics (7 GEMMs per tile pair; bitwise
    the same gradients every run). Otherwise one dK/dV launch that also reduce-adds dQ into an fp32
    buffer (5 GEMMs per tile pair, FA3's design; the summation order of dQ varies between runs),
    after a Delta pre-pass, and the buffer is cast to dQ's dtype.
    """
    from ._bwd import _attn_bwd_delta, _attn_dkdv_hopper, _attn_dq_hopper

    q, k, v, out, dout = _aligned(q, k, v, out, dout.contiguous())
    B, H, Sq, D = q.shape
    dq, dk, dv = grads if grads is not None else (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
    delta = torch.empty((B, H, Sq), dtype=torch.float32, device=q.device)
    dlse_t = delta if dlse is None else dlse.contiguous()
    scales = (plan.sm_scale * LOG2E, plan.sm_scale)
    shapes = (B, H, plan.group, Sq, plan.Sk)
    causal, persistent = plan.static.causal, KNOBS.persistent
    m = V.BWD_BLOCK_M
    if deterministic:
        # dQ first: it writes Delta = rowsum(dO * O) - dLSE for every query row, which dK/dV reads.
        sch = plan.schedule("dq")
        _attn_dq_hopper[_grid(B * sch.num_programs, q.device, persistent)](
            _descriptor(q, 64), _descriptor(k, V.BLOCK_N), _descriptor(v, V.BLOCK_N), _descriptor(dout, 64),
            _descriptor(dq, 64), out, lse, delta, dlse_t, sch.programs, sch.seg_start, B * sch.num_programs,
            *shapes, sch.num_outer, *scales, HEAD_DIM=D, BLOCK_N=V.BLOCK_N, STAGES=V.DQ_STAGES[D],
            CAUSAL=causal, HAS_DLSE=dlse is not None, num_warps=4, maxnreg=V.MAXNREG)
        dq_desc, stages = _descriptor(dk, 64), V.DKDV_STAGES[D]  # dq_desc: not read
    else:
        dq_acc = torch.zeros((B, H, Sq, D), dtype=torch.float32, device=q.device)
        _attn_bwd_delta[(B * H * Sq // V.DELTA_ROWS,)](out, dout, dlse_t, delta, HEAD_DIM=D, ROWS=V.DELTA_ROWS,
                                                        HAS_DLSE=dlse is not None, num_warps=4)
        dq_desc, stages = _descriptor(dq_acc, m), V.DKDV_ATOMIC_STAGES[D]
    sch = plan.schedule("dkdv")
    _attn_dkdv_hopper[_grid(B * sch.num_programs, q.device, persistent)](
        _descriptor(k, 64), _descriptor(v, 64), _descriptor(q, m), _descriptor(dout, m),
        _descriptor(dk, 64), _descriptor(dv, 64), dq_desc, lse, delta, sch.programs, sch.seg_start,
        B * sch.num_programs, *shapes, sch.num_outer, *scales, HEAD_DIM=D, BLOCK_M=m,
        STAGES=stages, CAUSAL=causal, DQ_ATOMIC=not deterministic, num_warps=4, maxnreg=V.MAXNREG)
    if not deterministic:
        dq.copy_(dq_acc)
    return dq, dk, dv
