"""Host side of the fused attention kernels: tile configs, the per-call plan, launches.

``_Plan`` gathers what one call's kernels need besides q, k, v (tile schedules from the layout
cache, masks as the kernels read them, per-batch tile lists for packed sequences, launch knobs);
``_forward`` and ``_backward`` launch the kernels. Everything that depends on a layout's contents
happens here, under the layout cache, never in the Python that ``torch.compile`` traces.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ._checks import dot_precision, interpreting, next_pow2
from .lut import as_layout, cached_per_layout, tile_schedule, tile_size

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

    ``head_dim`` is the tiles' (a power of two). ``row_keys``: the layout's mean keys per query
    row. Measured on the H100 with TMA loads (docs/perf-notes.md, tune runs 7-9): short rows (a
    few key tiles per program) favour small programs with a shallow pipeline (64x64, 2 stages: 7%
    over 3); long rows (Fixed, dense) 64x128 tiles, 3 stages. An outer tile larger than the
    layout block pads its gathered lists (the union of its rows' lists), so 128-token outer tiles
    only at block 128: there the dK/dV launch gains 5-9% from 128-key tiles over 32-query steps,
    5 stages deep; at block 64 it takes 64 keys over 32-query steps, 2 stages. D128 keeps 64x64
    backward tiles (every other shape tried, 10 of them, was 2-100% slower), with dK/dV's scores
    queries x keys so K and V stay in shared memory (spills 12 -> 2 registers, 1-3% faster;
    4-35% slower at D64: run 14), and a 4-stage 128x64 forward. D256 halves the tiles' token
    sides and doubles the warps, so the fp32 accumulators (64 x 256) stay in registers.
    """
    if head_dim >= 256:
        return (KernelConfig(64, 64, 8, 2), KernelConfig(64, 32, 8, 2, query_major=True),
                KernelConfig(64, 32, 8, 2))
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


def tile_head_dim(head_dim: int) -> int:
    """The power of two (>= 16, tl.dot's minimum) the kernels' tiles use for a head dim."""
    return max(16, next_pow2(head_dim))


# Set by the benchmark script to try other tile shapes; None = default_configs.
CONFIG_OVERRIDE = None


class AttnArgs(NamedTuple):
    """One call's arguments besides q, k, v, validated (``_attn_checks.check_args``)."""

    layout: torch.Tensor
    block: int
    causal: bool = False
    sm_scale: float = 1.0
    key_padding_mask: torch.Tensor | None = None
    key_padding_mask_mode: str = "add"
    attn_mask: torch.Tensor | None = None
    attn_mask_mode: str = "mul"
    rpe: torch.Tensor | None = None
    segment_ids: torch.Tensor | None = None


def _prep_mask(mask, mode):
    """(tensor for the kernel, mask kind): no conversion copy, the kernel reads the raw values."""
    if mask is None:
        return None, MASK_NONE
    mask = mask.detach().contiguous()
    if mask.dtype == torch.bool:
        return mask.view(torch.uint8), MASK_KEEP
    return mask, MASK_KEEP if mode == "mul" else MASK_ADD


def _prep_rpe(rpe, Sk):
    if rpe is None:
        return None, 0, 0
    rpe = rpe.detach()
    if rpe.stride(-1) != 1 or rpe.stride(-2) != Sk:
        rpe = rpe.contiguous()
    return rpe, (rpe.stride(0) if rpe.shape[0] > 1 else 0), (rpe.stride(1) if rpe.shape[1] > 1 else 0)


class _Plan:
    """Everything one call's kernels need besides q, k, v: schedules, masks, launch knobs."""

    def __init__(self, args: AttnArgs, q_shape, kv_shape, dtype, device):
        B, H, Sq, D = q_shape
        self.B, self.H, self.Sq, self.D = B, H, Sq, D
        self.Hkv, self.Sk = kv_shape[1], kv_shape[2]
        self.group = H // self.Hkv
        self.head_dim = tile_head_dim(D)
        self.layout, self.block, self.causal = args.layout, args.block, args.causal
        self.sm_scale = args.sm_scale
        fwd, dkdv, dq = CONFIG_OVERRIDE or default_configs(self.block, self.head_dim, dtype,
                                                           mean_row_keys(self.layout, self.block))
        self.configs = {"fwd": fwd, "dkdv": dkdv, "dq": dq}
        self.kpm, self.kpm_kind = _prep_mask(args.key_padding_mask, args.key_padding_mask_mode)
        self.am, self.am_kind = _prep_mask(args.attn_mask, args.attn_mask_mode)
        self.rpe, self.rpe_sb, self.rpe_sh = _prep_rpe(args.rpe, self.Sk)
        self.kpm_sb = self.kpm.stride(0) if self.kpm is not None else 0
        ids = args.segment_ids
        self.ids = None if ids is None else (ids if ids.is_contiguous() else ids.contiguous())
        self.dot_prec = dot_precision(dtype)
        self.device = device
        self._lists = {}  # id(schedule) -> (schedule, its per-batch lists for segment_ids)

    def schedule(self, which):
        cfg = self.configs[which]
        keys_outer = which == "dkdv"
        n_out, n_in = (self.Sk, self.Sq) if keys_outer else (self.Sq, self.Sk)
        outer, inner = tile_size(n_out, cfg.outer), tile_size(n_in, cfg.inner)
        args = (self.layout, self.block, outer, inner)
        kw = dict(causal=self.causal, transpose=keys_outer, num_heads=self.Hkv if keys_outer else self.H,
                  device=self.device, seq_lens=(self.Sq, self.Sk), group=self.group if keys_outer else 1)
        sch = tile_schedule(*args, **kw)
        # Split rows that would outlast the launch (global rows); packed sequences compact each
        # row's list per batch element instead, which needs whole rows.
        if which == "fwd" and self.ids is None:
            slots = _num_sms(self.device) * SPLIT_PROGRAMS_PER_SM
            cap = max(MIN_SPLIT_TILES, -(-self.B * sch.total_tiles // slots))
            if sch.max_tiles > cap:
                sch = tile_schedule(*args, split=cap, **kw)
        return sch

    def even(self, which, sch) -> bool:
        """No tile of this launch reaches past the end of its sequence: loads need no bounds."""
        n_out, n_in = (self.Sk, self.Sq) if which == "dkdv" else (self.Sq, self.Sk)
        return n_out % sch.outer == 0 and n_in % sch.seg == 0

    def lists(self, sch):
        """(programs, seg_start, tile_bits, counts) the kernel walks: the schedule's, or with
        segment_ids this call's per-batch compaction of it (``kernels/_segments.py``)."""
        if self.ids is None:
            return sch.programs, sch.seg_start, sch.tile_bits, sch.programs
        hit = self._lists.get(id(sch))
        if hit is None or hit[0] is not sch:
            from ._segments import segment_lists

            hit = self._lists[id(sch)] = (sch, segment_lists(sch, self.ids))
        return (sch.programs, *hit[1])

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
        return tuple(_rows_descriptor(x, r, self.head_dim) for x, r in zip(ops, rows)), True

    def launch(self, kernel, which, sch, tensors, scales, **constexprs):
        cfg = self.configs[which]
        dummy = tensors[3]  # the output (fwd) or O (bwd): always a tensor, unlike q/k/v under TMA
        # Forward and dQ name their tiles (BLOCK_M=outer, BLOCK_N=inner); dK/dV the other way.
        bm, bn = (sch.inner, sch.outer) if which == "dkdv" else (sch.outer, sch.inner)
        programs, seg_start, tile_bits, counts = self.lists(sch)
        args = (*tensors, programs, seg_start, tile_bits, counts, max(sch.num_tiles, 1), sch.num_rows,
                self.kpm if self.kpm is not None else dummy, self.kpm_sb,
                self.am if self.am is not None else dummy,
                self.rpe if self.rpe is not None else dummy, self.rpe_sb, self.rpe_sh,
                self.ids if self.ids is not None else dummy, self.Sk if self.ids is not None else 0,
                self.B, self.H, self.group, self.Sq, self.Sk, sch.num_outer, *scales)
        meta = dict(HEAD_DIM=self.head_dim, D=self.D, BLOCK_M=bm, BLOCK_N=bn, UNIT=sch.unit, SEG=sch.seg,
                    NSEG=sch.nseg, CAUSAL=self.causal, KPM_MODE=self.kpm_kind, AM_MODE=self.am_kind,
                    HAS_RPE=self.rpe is not None, SEGMENTS=self.ids is not None, EVEN=self.even(which, sch),
                    DOT_PREC=self.dot_prec, **constexprs)
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
    """(out, lse) of contiguous q, k, v; lse in log2 units, +inf for a query attending nothing."""
    from ._attn_fwd import _attn_fwd, _attn_fwd_combine  # at first launch: see tests/kernels/conftest.py

    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    sch = plan.schedule("fwd")
    slots = max(sch.num_slots, 1)
    part_acc = part_ml = lse  # unused without split rows
    if sch.num_slots:
        part_acc = torch.empty((plan.B, slots, sch.outer, plan.head_dim), dtype=torch.float32, device=q.device)
        part_ml = torch.empty((plan.B, slots, 2, sch.outer), dtype=torch.float32, device=q.device)
    qkv, tma = plan.operands("fwd", sch, q, k, v)
    plan.launch(_attn_fwd, "fwd", sch, (*qkv, out, lse, part_acc, part_ml, slots),
                (plan.sm_scale * LOG2E,), TMA=tma, POS_SCALE=plan.sm_scale > 0)
    if sch.num_split_rows:
        _attn_fwd_combine[(plan.B * sch.num_split_rows,)](
            part_acc, part_ml, out, lse, sch.combine, slots, plan.B, plan.H, plan.Sq, sch.num_outer,
            HEAD_DIM=plan.head_dim, D=plan.D, BLOCK_M=sch.outer, EVEN=plan.even("fwd", sch))
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


def _rows_descriptor(x, rows: int, head_dim: int | None = None):
    """Tensor descriptor over ``x`` (B, H, S, D) as (B*H*S, D) rows, loading ``rows`` x
    ``head_dim`` (default D; columns past D read as zeros) at a time.

    Building and validating a TensorDescriptor on every call was the largest share of our host
    time per fwd+bwd (11 of them), so one validated template per geometry is copied and pointed
    at ``x`` (its alignment is checked by ``_has_tma``).
    """
    D = x.shape[-1]
    template = _descriptor_template(x.numel() // D, D, x.dtype, rows, head_dim or D)
    desc = object.__new__(type(template))
    desc.__dict__.update(template.__dict__, base=x)
    return desc


@functools.lru_cache(maxsize=256)
def _descriptor_template(n_rows: int, head_dim: int, dtype: torch.dtype, rows: int, tile_dim: int):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(torch.empty(0, dtype=dtype), [n_rows, head_dim], [head_dim, 1], [rows, tile_dim])


def _backward(plan: _Plan, q, k, v, out, lse, dout, dlse=None):
    """(dq, dk, dv); ``dlse``: the gradient of the natural-log lse, or None."""
    from ._attn_bwd import _attn_bwd

    dout = dout.contiguous()
    delta = torch.empty(q.shape[:3], dtype=torch.float32, device=q.device)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    dlse_t = delta if dlse is None else dlse.contiguous()
    scales = (plan.sm_scale * LOG2E, plan.sm_scale)
    # dQ first: its programs cover every query row and write Delta, which dK/dV reads.
    for which in ("dq", "dkdv"):
        sch = plan.schedule(which)
        (q_, k_, v_, do_), tma = plan.operands(which, sch, q, k, v, dout)
        plan.launch(_attn_bwd, which, sch, (q_, k_, v_, out, do_, lse, delta, dq, dk, dv, dlse_t), scales,
                    TMA=tma, KEYS_OUTER=which == "dkdv", QUERY_MAJOR=plan.configs[which].query_major,
                    HAS_DLSE=dlse is not None, GQA=plan.group > 1)
    return dq, dk, dv

