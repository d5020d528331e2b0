"""Fused block-sparse flash attention (forward + backward) with DeepSpeed mask semantics.

``blocksparse_attention`` computes softmax(q k^T * scale + rpe + masks) v on a block layout's
non-zero blocks only, with an online softmax (no S x S and no nnz x block^2 buffer). CUDA tensors
run the Triton kernels; CPU tensors run the same kernels under ``TRITON_INTERPRET=1`` (that is how
CI tests them) and the plain PyTorch reference otherwise.

Semantics (``kernels/reference.py`` is the executable definition):

- masks follow DeepSpeed: ``"add"`` adds the value, ``"mul"`` turns 0 into -inf and keeps the
  rest, bool masks mean True = keep; the scale applies to q k^T only;
- ``causal=True`` also drops keys after the query inside diagonal blocks (DeepSpeed did not);
- a query with nothing to attend to (an empty layout row, or every key masked) outputs 0 and
  gets zero gradients, never NaN;
- gradients flow to q, k and v only: masks and rpe get none.

fp32 inputs are accepted (dot products in full fp32, slower); fp16/bf16 are the fast path. The
backward is deterministic: no atomics, each gradient element is reduced by a single program.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from ._checks import BLOCKS, DTYPES, HEAD_DIMS, check_block, dot_precision, interpreter_bf16, interpreting
from .lut import as_layout, cached_per_layout, tile_schedule, tile_size
from .masks import check_mode
from .reference import blocksparse_attention_reference

LOG2E = 1.4426950408889634
MASK_NONE, MASK_ADD, MASK_KEEP = 0, 1, 2


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape and launch knobs of one kernel (outer tile x inner tile)."""

    outer: int
    inner: int
    num_warps: int
    num_stages: int
    tma: bool = True  # bulk (TMA) loads where the GPU has them and inner tiles are one segment
    query_major: bool = False  # dK/dV: scores as queries x keys (K, V stay B operands)


def default_configs(block: int, head_dim: int, dtype: torch.dtype, row_keys: float = 0.0):
    """(forward, dK/dV, dQ) configs; dK/dV's outer tile is keys, the others' queries.

    ``row_keys``: the layout's mean keys per query row. Measured on the H100 with TMA loads
    (docs/perf-notes.md, tune runs 7-9): short rows (a few key tiles per program) favour small
    programs with a shallow pipeline (64x64, 2 stages: 7% over 3); long rows (Fixed, dense)
    64x128 tiles, 3 stages. An outer tile larger than the layout block pads its gathered lists
    (the union of its rows' lists), so 128-token outer tiles only at block 128: there the dK/dV
    launch gains 5-9% from 128-key tiles over 32-query steps, 5 stages deep; at block 64 it takes
    64 keys over 32-query steps, 2 stages. D128 keeps 64x64 backward tiles (every other shape
    tried, 10 of them, was 2-100% slower), with dK/dV's scores queries x keys so K and V stay in
    shared memory (spills 12 -> 2 registers, 1-3% faster; 4-35% slower at D64: run 14), and a
    4-stage 128x64 forward.
    """
    if head_dim >= 128:
        dkdv = KernelConfig(64, 64, 4, 3, query_major=True)
        return KernelConfig(128, 64, 4, 4), dkdv, KernelConfig(64, 64, 4, 3)
    small = KernelConfig(64, 64, 4, 3)
    if block < 64:
        return small, small, small
    short_fwd = KernelConfig(64, 64, 4, 2)
    if block == 64:
        return short_fwd, KernelConfig(64, 32, 4, 2), small
    fwd = KernelConfig(64, 128, 4, 3) if row_keys >= LONG_ROW_KEYS else short_fwd
    return fwd, KernelConfig(128, 32, 4, 5), small


# Mean keys per query row from which the forward takes the long-row config (sliding windows of a
# few blocks stay below, Fixed/dense rows of thousands of keys above).
LONG_ROW_KEYS = 2048


def mean_row_keys(layout, block: int) -> float:
    """Mean number of keys a query row of ``layout`` attends to (cached per layout)."""
    def build():
        lay = as_layout(layout)
        return float(lay.sum()) * block / max(1, lay.shape[0] * lay.shape[1])
    return cached_per_layout(layout, ("row_keys", block), build)


# Set by the benchmark script to try other tile shapes; None = default_configs.
CONFIG_OVERRIDE = None


def _check_qkv(q, k, v):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H, S, D), got shape {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.shape != q.shape:
            raise ValueError(f"{name} must have q's shape {tuple(q.shape)}, got {tuple(t.shape)}")
        if t.dtype != q.dtype:
            raise ValueError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"q head dim must be one of {HEAD_DIMS}, got {q.shape[-1]}")


def _check_layout(layout, block, B, H, S):
    if isinstance(block, bool) or not isinstance(block, int):
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    check_block(block)
    if S % block:
        raise ValueError(f"block {block} must divide the sequence length {S}")
    if not isinstance(layout, torch.Tensor):
        raise ValueError(f"layout must be a torch.Tensor of 0/1, got {type(layout).__name__}")
    nb = S // block
    shape = tuple(layout.shape)
    ok = shape == (nb, nb) or (len(shape) == 3 and shape[0] in (1, H) and shape[1:] == (nb, nb))
    if not ok:
        raise ValueError(f"layout must be ({H} or 1, {nb}, {nb}) or ({nb}, {nb}) for S={S} and "
                         f"block={block}, got {shape}")


def _prep_mask(mask, mode, name, shape, device):
    """(tensor for the kernel, mask kind): no conversion copy, the kernel reads the raw values."""
    check_mode(mode, f"{name}_mode")
    if mask is None:
        return None, MASK_NONE
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} must be on q's device {device}, got {mask.device}")
    if mask.is_complex():
        raise ValueError(f"{name} must be real or bool, got {mask.dtype}")
    mask = mask.detach().contiguous()
    if mask.dtype == torch.bool:
        return mask.view(torch.uint8), MASK_KEEP
    return mask, MASK_KEEP if mode == "mul" else MASK_ADD


def _prep_rpe(rpe, B, H, S, device):
    if rpe is None:
        return None, 0, 0
    if not isinstance(rpe, torch.Tensor) or rpe.dim() != 4:
        raise ValueError(f"rpe must be a (B or 1, H or 1, S, S) tensor, got "
                         f"{getattr(rpe, 'shape', type(rpe).__name__)}")
    rb, rh, rs1, rs2 = rpe.shape
    if rb not in (1, B) or rh not in (1, H) or (rs1, rs2) != (S, S):
        raise ValueError(f"rpe must have shape ({B} or 1, {H} or 1, {S}, {S}), got {tuple(rpe.shape)}")
    if rpe.device != device:
        raise ValueError(f"rpe must be on q's device {device}, got {rpe.device}")
    if not rpe.is_floating_point():
        raise ValueError(f"rpe must be a floating tensor, got {rpe.dtype}")
    rpe = rpe.detach()
    if rpe.stride(-1) != 1 or rpe.stride(-2) != S:
        rpe = rpe.contiguous()
    return rpe, (rpe.stride(0) if rb > 1 else 0), (rpe.stride(1) if rh > 1 else 0)


def _use_triton(q: torch.Tensor) -> bool:
    return q.is_cuda or interpreting()


class _Plan:
    """Everything one call's kernels need besides q, k, v: schedules, masks, launch knobs."""

    def __init__(self, layout, block, causal, sm_scale, kpm, kpm_kind, am, am_kind, rpe, rpe_sb,
                 rpe_sh, shape, dtype, device):
        B, H, S, D = shape
        fwd, dkdv, dq = CONFIG_OVERRIDE or default_configs(block, D, dtype, mean_row_keys(layout, block))
        self.B, self.H, self.S, self.D = B, H, S, D
        self.layout, self.block, self.causal, self.sm_scale = layout, block, causal, sm_scale
        self.configs = {"fwd": fwd, "dkdv": dkdv, "dq": dq}
        self.kpm, self.kpm_kind, self.am, self.am_kind = kpm, kpm_kind, am, am_kind
        self.rpe, self.rpe_sb, self.rpe_sh = rpe, rpe_sb, rpe_sh
        self.kpm_sb = kpm.stride(0) if kpm is not None else 0
        self.dot_prec = dot_precision(dtype)
        self.device = device

    def schedule(self, which):
        cfg = self.configs[which]
        outer, inner = tile_size(self.S, cfg.outer), tile_size(self.S, cfg.inner)
        args = (self.layout, self.block, outer, inner)
        kw = dict(causal=self.causal, transpose=which == "dkdv", num_heads=self.H, device=self.device)
        sch = tile_schedule(*args, **kw)
        if which == "fwd":  # split rows that would outlast the launch (global rows)
            slots = _num_sms(self.device) * SPLIT_PROGRAMS_PER_SM
            cap = max(MIN_SPLIT_TILES, -(-self.B * sch.total_tiles // slots))
            if sch.max_tiles > cap:
                sch = tile_schedule(*args, split=cap, **kw)
        return sch

    def operands(self, which, sch, q, k, v, dout=None):
        """(q, k, v[, dout]) as the kernel takes them, and whether it loads them with TMA.

        TMA (Hopper bulk copies) needs one contiguous run of tokens per tile, so only schedules
        whose inner tiles are a single segment take it; the operands are then tensor descriptors
        over (B*H*S, D) rows, each as tall as the tile it loads in this pass. Loading the outer
        tile through pointers instead cost the D128 forward 10% (run 11).
        """
        ops = (q, k, v) if dout is None else (q, k, v, dout)
        if not (self.configs[which].tma and sch.nseg == 1 and _has_tma(*ops)):
            return ops, False
        q_rows, kv_rows = (sch.inner, sch.outer) if which == "dkdv" else (sch.outer, sch.inner)
        rows = (q_rows, kv_rows, kv_rows, q_rows)
        return tuple(_rows_descriptor(x, r) for x, r in zip(ops, rows)), True

    def launch(self, kernel, which, sch, tensors, scales, **constexprs):
        cfg = self.configs[which]
        dummy = tensors[3]  # the output (fwd) or O (bwd): always a tensor, unlike q/k/v under TMA
        # Forward and dQ name their tiles (BLOCK_M=outer, BLOCK_N=inner); dK/dV the other way.
        bm, bn = (sch.inner, sch.outer) if which == "dkdv" else (sch.outer, sch.inner)
        args = (*tensors, sch.programs, sch.seg_start, sch.tile_bits,
                self.kpm if self.kpm is not None else dummy, self.kpm_sb,
                self.am if self.am is not None else dummy,
                self.rpe if self.rpe is not None else dummy, self.rpe_sb, self.rpe_sh,
                self.B, self.H, self.S, sch.num_outer, *scales)
        meta = dict(HEAD_DIM=self.D, BLOCK_M=bm, BLOCK_N=bn, UNIT=sch.unit, SEG=sch.seg, NSEG=sch.nseg,
                    CAUSAL=self.causal, KPM_MODE=self.kpm_kind, AM_MODE=self.am_kind,
                    HAS_RPE=self.rpe is not None, DOT_PREC=self.dot_prec, **constexprs)
        # Masks, rpe and fp32 inputs stage more per tile than the tuned depth may leave room for:
        # the deepest pipeline that fits is found once per kernel variant and remembered.
        from triton.runtime.errors import OutOfResources

        key = (id(kernel), cfg, *meta.values(), dummy.dtype)  # meta's keys come in a fixed order
        stages = _STAGES_THAT_FIT.get(key, cfg.num_stages)
        while True:
            try:
                kernel[(self.B * sch.num_programs,)](*args, num_warps=cfg.num_warps,
                                                     num_stages=stages, **meta)
                break
            except OutOfResources:
                if stages <= 1:
                    raise
                stages -= 1
                _STAGES_THAT_FIT[key] = stages


_STAGES_THAT_FIT: dict = {}


# Rows are split only into pieces of at least this many tiles (merging costs a pass over D).
MIN_SPLIT_TILES = 16
# A row is split when it is longer than the launch's average work per this many programs per SM.
SPLIT_PROGRAMS_PER_SM = 8


def _num_sms(device) -> int:
    if device.type != "cuda":
        return 1
    return _sm_count(_device_index(device))


def _device_index(device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _forward(plan: _Plan, q, k, v):
    from ._attn_fwd import _attn_fwd, _attn_fwd_combine  # at first launch: see tests/kernels/conftest.py

    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    sch = plan.schedule("fwd")
    slots = max(sch.num_slots, 1)
    part_acc = part_ml = lse  # unused without split rows
    if sch.num_slots:
        part_acc = torch.empty((plan.B, slots, sch.outer, plan.D), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((plan.B, slots, 2, sch.outer), dtype=torch.float32, device=q.device)
    qkv, tma = plan.operands("fwd", sch, q, k, v)
    plan.launch(_attn_fwd, "fwd", sch, (*qkv, out, lse, part_acc, part_ml, slots),
                (plan.sm_scale * LOG2E,), TMA=tma, POS_SCALE=plan.sm_scale > 0)
    if sch.num_split_rows:
        _attn_fwd_combine[(plan.B * sch.num_split_rows,)](
            part_acc, part_ml, out, lse, sch.combine, slots, plan.B, plan.H, plan.S, sch.num_outer,
            HEAD_DIM=plan.D, BLOCK_M=sch.outer)
    return out, lse


def _has_tma(*xs: torch.Tensor) -> bool:
    """TMA loads: Hopper or later (the interpreter emulates them), every base 16-byte aligned."""
    if any(t.data_ptr() % 16 for t in xs):
        return False
    x = xs[0]
    if not x.is_cuda:
        return interpreting()
    return _capability(_device_index(x.device))[0] >= 9


@functools.lru_cache(maxsize=None)
def _capability(index: int):
    return torch.cuda.get_device_capability(index)


def _rows_descriptor(x, rows: int):
    """Tensor descriptor over ``x`` (B, H, S, D) as (B*H*S, D) rows, loading ``rows`` at a time.

    Building and validating a TensorDescriptor on every call was the largest share of our host
    time per fwd+bwd (11 of them), so one validated template per geometry is copied and pointed
    at ``x`` (its alignment is checked by ``_has_tma``).
    """
    template = _descriptor_template(x.numel() // x.shape[-1], x.shape[-1], x.dtype, rows)
    desc = object.__new__(type(template))
    desc.__dict__.update(template.__dict__, base=x)
    return desc


@functools.lru_cache(maxsize=256)
def _descriptor_template(n_rows: int, head_dim: int, dtype: torch.dtype, rows: int):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(torch.empty(0, dtype=dtype), [n_rows, head_dim], [head_dim, 1], [rows, head_dim])


def _backward(plan: _Plan, q, k, v, out, lse, dout):
    from ._attn_bwd import _attn_bwd

    dout = dout.contiguous()
    delta = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    scales = (plan.sm_scale * LOG2E, plan.sm_scale)
    # dQ first: its programs cover every query row and write Delta, which dK/dV reads.
    for which in ("dq", "dkdv"):
        sch = plan.schedule(which)
        (q_, k_, v_, do_), tma = plan.operands(which, sch, q, k, v, dout)
        plan.launch(_attn_bwd, which, sch, (q_, k_, v_, out, do_, lse, delta, dq, dk, dv), scales,
                    TMA=tma, KEYS_OUTER=which == "dkdv", QUERY_MAJOR=plan.configs[which].query_major)
    return dq, dk, dv


class _BlockSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse = _forward(plan, q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(ctx.plan, q, k, v, out, lse, dout)
        return dq, dk, dv, None


def blocksparse_attention(q, k, v, layout, block, *, causal=False, sm_scale=None,
                          key_padding_mask=None, key_padding_mask_mode="add",
                          attn_mask=None, attn_mask_mode="mul", rpe=None):
    """Block-sparse attention of ``(B, H, S, D)`` q, k, v on ``layout``'s non-zero blocks.

    ``layout`` is ``(H, S/block, S/block)`` (or ``(1, ...)``/2-D: shared by every head) of 0/1.
    ``key_padding_mask`` is ``(B, S)``, ``attn_mask`` ``(S, S)`` indexed [query, key], ``rpe``
    ``(B or 1, H or 1, S, S)`` added to the scores; ``sm_scale`` defaults to D ** -0.5.
    Returns a tensor shaped and typed like ``q``. Invalid arguments raise ValueError.
    """
    _check_qkv(q, k, v)
    B, H, S, D = q.shape
    _check_layout(layout, block, B, H, S)
    if sm_scale is None:
        sm_scale = D ** -0.5
    elif isinstance(sm_scale, bool) or not isinstance(sm_scale, (int, float)) or not math.isfinite(sm_scale):
        raise ValueError(f"sm_scale must be a finite number or None, got {sm_scale!r}")
    causal = bool(causal)
    kpm, kpm_kind = _prep_mask(key_padding_mask, key_padding_mask_mode, "key_padding_mask", (B, S), q.device)
    am, am_kind = _prep_mask(attn_mask, attn_mask_mode, "attn_mask", (S, S), q.device)
    rpe_t, rpe_sb, rpe_sh = _prep_rpe(rpe, B, H, S, q.device)

    if not _use_triton(q):
        as_layout(layout)  # same 0/1 validation as the kernel path
        compute = torch.float32 if q.dtype != torch.float32 else None
        out = blocksparse_attention_reference(
            q, k, v, layout, block, causal=causal, sm_scale=sm_scale,
            key_padding_mask=None if key_padding_mask is None else key_padding_mask.detach(),
            key_padding_mask_mode=key_padding_mask_mode,
            attn_mask=None if attn_mask is None else attn_mask.detach(), attn_mask_mode=attn_mask_mode,
            rpe=None if rpe is None else rpe.detach(), compute_dtype=compute)
        return out.to(q.dtype)

    if interpreter_bf16(q):
        # Triton's interpreter computes bf16 dots wrongly (numpy has no bf16): run the same
        # kernels in fp32 and round the result, autograd casting the gradients back.
        out = blocksparse_attention(q.float(), k.float(), v.float(), layout, block, causal=causal,
                                    sm_scale=sm_scale, key_padding_mask=key_padding_mask,
                                    key_padding_mask_mode=key_padding_mask_mode, attn_mask=attn_mask,
                                    attn_mask_mode=attn_mask_mode, rpe=rpe)
        return out.to(torch.bfloat16)
    plan = _Plan(layout, block, causal, float(sm_scale), kpm, kpm_kind, am, am_kind, rpe_t,
                 rpe_sb, rpe_sh, (B, H, S, D), q.dtype, q.device)
    return _BlockSparseAttention.apply(q, k, v, plan)
