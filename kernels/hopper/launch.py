"""Host side of the Hopper kernels: which calls they take, their schedules, descriptors and launches.

Entry points (CUDA tensors on an sm90 GPU, contiguous ``(B, H, S, D)``):

- ``supports(...) -> (bool, reason)``: whether a call can run here, and if not, why;
- ``tile_schedules(layout, block, causal, num_heads, batch, device)``: the three schedules from
  ``kernels/lut.py`` (the index tables the Triton kernels use, at the Hopper tile shapes);
- ``forward(q, k, v, schedules, sm_scale, causal) -> (out, lse)`` and
  ``backward(q, k, v, out, lse, dout, schedules, sm_scale, causal) -> (dq, dk, dv)``.

``lse`` is in the portable kernels' convention: log2 units (m + log2(l) of the scores scaled by
``sm_scale * log2(e)``), +inf for a query with nothing to attend to.
"""
from __future__ import annotations

import functools

import torch

from ..lut import tile_schedule
from . import variants as V

LOG2E = 1.4426950408889634
BLOCK = 128  # the only layout block the Hopper kernels take (one layout block = one tile)


def gluon_available() -> bool:
    """Triton ships Gluon's Hopper modules (3.6 and later)."""
    return _gluon_import_error() is None


@functools.lru_cache(maxsize=1)
def _gluon_import_error():
    try:
        from . import _bwd, _fwd  # noqa: F401
    except Exception as e:  # an older or newer triton without these modules
        return f"{type(e).__name__}: {e}"
    return None


def device_support(capability):
    """``(True, "")`` if a GPU of ``capability`` (major, minor) can run the Hopper kernels with
    this triton, else ``(False, reason)``."""
    if capability is None:
        return False, "no CUDA GPU"
    major, minor = capability
    if major != 9:
        return False, f"GPU is sm{major}{minor}; the Hopper kernels need sm90 (H100/H200)"
    if not gluon_available():
        return False, f"triton has no Gluon Hopper support ({_gluon_import_error()})"
    return True, ""


def supports(q, k, v, block, *, sm_scale, masks=False, rpe=False, causal=False):
    """``(True, "")`` if the Hopper kernels can compute this call, else ``(False, reason)``.

    ``masks``/``rpe``: whether a key padding mask / attention mask / rpe is given (those run on
    the Triton path). ``causal`` is supported.
    """
    del causal
    if not q.is_cuda:
        return False, "tensors are not on a CUDA device"
    ok, why = device_support(_capability(q.device.index if q.device.index is not None
                                         else torch.cuda.current_device()))
    if not ok:
        return False, why
    if q.dtype not in (torch.float16, torch.bfloat16):
        return False, f"dtype {q.dtype} (Hopper kernels take float16/bfloat16)"
    if q.shape[-1] not in V.HEAD_DIMS:
        return False, f"head dim {q.shape[-1]} (Hopper kernels take {V.HEAD_DIMS})"
    if block != BLOCK:
        return False, f"layout block {block} (Hopper kernels take block {BLOCK}; smaller blocks gather tiles)"
    if masks or rpe:
        return False, "key_padding_mask/attn_mask/rpe run on the Triton path"
    if not sm_scale > 0:
        return False, f"sm_scale {sm_scale} (Hopper kernels need a positive scale)"
    if k.shape != q.shape or v.shape != q.shape:
        return False, "q, k and v differ in shape"
    return True, ""


@functools.lru_cache(maxsize=None)
def _capability(index: int):
    return torch.cuda.get_device_capability(index)


CALLS = "block-128 layouts, fp16/bf16, head dim 64 or 128, no key_padding_mask/attn_mask/rpe"


def tile_schedules(layout, block, causal, num_heads, batch, device):
    """{"fwd", "dq", "dkdv"} tile schedules at the Hopper tile shapes (cached with the layout).

    Forward rows longer than a fair share of the launch are split (the Triton path's policy,
    whose combine kernel merges the pieces); dQ and dK/dV programs own whole rows/columns.
    """
    from ..attention import MIN_SPLIT_TILES, SPLIT_PROGRAMS_PER_SM, _num_sms

    device = torch.device(device)
    kw = dict(causal=causal, num_heads=num_heads, device=device)
    fwd = tile_schedule(layout, block, 128, V.BLOCK_N, transpose=False, **kw)
    dq = fwd
    cap = max(MIN_SPLIT_TILES, -(-batch * fwd.total_tiles // (_num_sms(device) * SPLIT_PROGRAMS_PER_SM)))
    if fwd.max_tiles > cap:
        fwd = tile_schedule(layout, block, 128, V.BLOCK_N, transpose=False, split=cap, **kw)
    dkdv = tile_schedule(layout, block, 128, V.BWD_BLOCK_M, transpose=True, **kw)
    return {"fwd": fwd, "dq": dq, "dkdv": dkdv}


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

    gl_dtype = gl.float16 if dtype == torch.float16 else gl.bfloat16
    layout = gl.NVMMASharedLayout.get_default_for([rows, head_dim], gl_dtype)
    base = torch.empty(0, dtype=dtype)
    return TensorDescriptor(base, [n_rows, head_dim], [head_dim, 1], [rows, head_dim], layout)


def forward(q, k, v, schedules, sm_scale, causal, *, loop=None, persistent=True, out=None, lse=None):
    """(out, lse) of the block-sparse attention; ``out``/``lse`` may be given (tests poison them).

    ``loop``: (pipeline, pingpong, Q buffers) of the kernel (default ``variants.FWD_LOOPS[0]``);
    ``persistent``: one CTA per SM walking the programs (else one CTA per program).
    """
    from .._attn_fwd import _attn_fwd_combine
    from ._fwd import _attn_fwd_hopper

    B, H, S, D = q.shape
    sch = schedules["fwd"]
    out = torch.empty_like(q) if out is None else out
    lse = torch.empty((B, H, S), dtype=torch.float32, device=q.device) if lse is None else lse
    slots = max(sch.num_slots, 1)
    part_acc = part_ml = lse  # unused without split rows
    if sch.num_slots:
        part_acc = torch.empty((B, slots, 128, D), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((B, slots, 2, 128), dtype=torch.float32, device=q.device)
    pipeline, pingpong, q_bufs = loop or V.FWD_LOOPS[0]
    _attn_fwd_hopper[_grid(B * sch.num_programs, q.device, persistent)](
        _descriptor(q, 64), _descriptor(k, V.BLOCK_N), _descriptor(v, V.BLOCK_N), _descriptor(out, 64),
        lse, part_acc, part_ml, slots, sch.programs, sch.seg_start, B * sch.num_programs, B, H, S,
        sch.num_outer, sm_scale * LOG2E, HEAD_DIM=D, BLOCK_N=V.BLOCK_N, STAGES=V.FWD_STAGES[D],
        CAUSAL=causal, PIPELINE=pipeline, PINGPONG=pingpong, Q_BUFS=q_bufs, num_warps=4,
        maxnreg=V.MAXNREG)
    if sch.num_split_rows:
        _attn_fwd_combine[(B * sch.num_split_rows,)](
            part_acc, part_ml, out, lse, sch.combine, slots, B, H, S, sch.num_outer,
            HEAD_DIM=D, BLOCK_M=128)
    return out, lse


def _grid(num_programs, device, persistent):
    """One CTA per SM (each takes every G-th program of the heaviest-first list), or one per
    program. Shared memory allows one CTA per SM either way."""
    from ..attention import _num_sms

    return (max(1, min(num_programs, _num_sms(device)) if persistent else num_programs),)


def backward(q, k, v, out, lse, dout, schedules, sm_scale, causal, *, persistent=True, grads=None):
    """(dq, dk, dv); deterministic (no atomics). ``grads`` may give the three outputs."""
    from ._bwd import _attn_dkdv_hopper, _attn_dq_hopper

    B, H, S, D = q.shape
    dout = dout.contiguous()
    dq, dk, dv = grads if grads is not None else (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v))
    delta = torch.empty((B, H, S), dtype=torch.float32, device=q.device)
    scales = (sm_scale * LOG2E, sm_scale)
    # dQ first: it writes Delta = rowsum(dO * O) for every query row, which dK/dV reads.
    sch = schedules["dq"]
    _attn_dq_hopper[_grid(B * sch.num_programs, q.device, persistent)](
        _descriptor(q, 64), _descriptor(k, V.BLOCK_N), _descriptor(v, V.BLOCK_N), _descriptor(dout, 64),
        _descriptor(dq, 64), out, lse, delta, sch.programs, sch.seg_start, B * sch.num_programs, B, H, S,
        sch.num_outer,
        *scales, HEAD_DIM=D, BLOCK_N=V.BLOCK_N, STAGES=V.DQ_STAGES[D], CAUSAL=causal,
        num_warps=4, maxnreg=V.MAXNREG)
    sch = schedules["dkdv"]
    m = V.BWD_BLOCK_M
    _attn_dkdv_hopper[_grid(B * sch.num_programs, q.device, persistent)](
        _descriptor(k, 64), _descriptor(v, 64), _descriptor(q, m), _descriptor(dout, m),
        _descriptor(dk, 64), _descriptor(dv, 64), lse, delta, sch.programs, sch.seg_start,
        B * sch.num_programs, B, H, S, sch.num_outer, *scales, HEAD_DIM=D, BLOCK_M=m, STAGES=V.DKDV_STAGES[D],
        CAUSAL=causal, num_warps=4, maxnreg=V.MAXNREG)
    return dq, dk, dv


class _HopperAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, schedules, sm_scale, causal, loop, persistent):
        out, lse = forward(q, k, v, schedules, sm_scale, causal, loop=loop, persistent=persistent)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args = (schedules, sm_scale, causal)
        ctx.persistent = persistent
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        grads = backward(q, k, v, out, lse, dout, *ctx.args, persistent=ctx.persistent)
        return (*grads, None, None, None, None, None)


def attention(q, k, v, layout, block, *, causal=False, sm_scale=None, loop=None, persistent=True):
    """Differentiable block-sparse attention on the Hopper kernels alone (benchmarks and tests;
    ``blocksparse_attention`` is the library entry). Raises ValueError with the reason when
    ``supports`` says no."""
    sm_scale = q.shape[-1] ** -0.5 if sm_scale is None else float(sm_scale)
    ok, why = supports(q, k, v, block, sm_scale=sm_scale, causal=causal)
    if not ok:
        raise ValueError(f"the Hopper kernels cannot run this call: {why}")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    sch = tile_schedules(layout, block, causal, q.shape[1], q.shape[0], q.device)
    return _HopperAttention.apply(q, k, v, sch, sm_scale, causal, loop, persistent)
