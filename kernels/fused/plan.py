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

from .._checks import dot_precision, next_pow2
from .tma import _device_index, _has_tma, _rows_descriptor  # noqa: F401 (tests patch _has_tma here)
from ..lut import as_layout, cached_per_layout, tile_schedule, tile_size

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
    pad_head: bool = False  # forward: pad head dims of 3 * 2^k too (else three power-of-two pieces)


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
    4-35% slower at D64: run 14), and a 4-stage 128x64 forward. D256 runs 8 warps, two warpgroups
    of 64 rows each holding a 64 x 256 fp32 accumulator (FlashAttention's 128-query forward and
    64 x 64 backward tiles at this head dim): every dot stays on Hopper's warpgroup MMA with
    M >= 64 per warpgroup (the earlier 32-query dK/dV steps compiled to mma.sync with K and V in
    registers: 0.38x D128's fwd+bwd TF/s), no spills, 2 stages in 197-206 KB of shared memory
    (scripts/compile_sm90.py --candidates 256); the H200 sweep then chose keys-major dK/dV and a
    4-warp dQ (perf notes, issue-11 run 2). fp32 tiles are twice the bytes: they keep the
    64 x 32 shapes that fit.
    """
    if head_dim >= 256:
        if dtype == torch.float32:
            return (KernelConfig(64, 64, 8, 2), KernelConfig(64, 32, 8, 2, query_major=True),
                    KernelConfig(64, 32, 8, 2))
        fwd = KernelConfig(128, 64, 8, 2) if block >= 128 else KernelConfig(64, 64, 8, 2)
        # H200 sweep (sliding, block 128): keys-major dK/dV 12% and a one-warpgroup dQ 7% faster
        return fwd, KernelConfig(64, 64, 8, 2), KernelConfig(64, 64, 4, 2)
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
    """One call's arguments besides q, k, v, validated (``fused.args.check_args``)."""

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
    backend: str = "triton"  # the kernels that run the call: "triton" or "hopper" (fused.backend)
    deterministic: bool = True  # False: the Hopper backward may reduce-add dQ (the Triton path ignores it)


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


class _Launch:
    """One kernel launch of a static plan: its schedule and what Triton gets besides tensors."""

    __slots__ = ("cfg", "sch", "grid", "even", "lists", "base", "variants")

    def __init__(self, cfg, sch, grid, even, lists, base):
        self.cfg, self.sch, self.grid, self.even, self.lists, self.base = cfg, sch, grid, even, lists, base
        self.variants = {}  # the launch's own constexprs -> (meta, [pipeline stages that fit])


class _Static:
    """What a call's launches need that depends only on the layout, shapes, dtype, device and
    mask kinds, never on tensor values: built once and cached with the layout, so a call only
    binds its tensors (this kept the host time per call at the pre-issue-11 level with more
    kernel arguments; scripts/host_overhead.py measures it)."""

    def __init__(self, layout, block, causal, q_shape, kv_shape, dtype, device, kpm_kind, am_kind, has_rpe,
                 has_ids, backend="triton"):
        self.B, self.H, self.Sq, self.D = q_shape
        self.Hkv, self.Sk = kv_shape[1], kv_shape[2]
        self.group = self.H // self.Hkv
        self.head_dim = tile_head_dim(self.D)
        self.layout, self.block, self.causal, self.device, self.has_ids = layout, block, causal, device, has_ids
        if backend == "hopper":  # the Hopper kernels' tiles; their launch knobs live with them
            from ..hopper.variants import PLAN_TILES

            fwd, dkdv, dq = (KernelConfig(*PLAN_TILES[w], 4, 1) for w in ("fwd", "dkdv", "dq"))
        else:
            fwd, dkdv, dq = CONFIG_OVERRIDE or default_configs(block, self.head_dim, dtype,
                                                                mean_row_keys(layout, block))
        self.configs = {"fwd": fwd, "dkdv": dkdv, "dq": dq}
        self.meta = dict(HEAD_DIM=self.head_dim, D=self.D, CAUSAL=causal, KPM_MODE=kpm_kind, AM_MODE=am_kind,
                         HAS_RPE=has_rpe, SEGMENTS=has_ids, DOT_PREC=dot_precision(dtype))
        self.stage_key = (dtype, *self.meta.values())
        self.launches = {}

    def launch(self, which: str, cfg: KernelConfig) -> _Launch:
        hit = self.launches.get(which)
        if hit is not None and hit.cfg is cfg:
            return hit
        hit = self.launches[which] = self.launch_of(which, cfg, self._schedule(which, cfg))
        return hit

    def launch_of(self, which: str, cfg: KernelConfig, sch) -> _Launch:
        keys_outer = which == "dkdv"
        n_out, n_in = (self.Sk, self.Sq) if keys_outer else (self.Sq, self.Sk)
        # Forward and dQ name their tiles (BLOCK_M=outer, BLOCK_N=inner); dK/dV the other way.
        bm, bn = (sch.inner, sch.outer) if keys_outer else (sch.outer, sch.inner)
        even = n_out % sch.outer == 0 and n_in % sch.seg == 0  # no tile reaches past its sequence
        base = dict(self.meta, BLOCK_M=bm, BLOCK_N=bn, UNIT=sch.unit, SEG=sch.seg, NSEG=sch.nseg, EVEN=even)
        if which == "fwd" and not cfg.pad_head and self.head_dim >= 64 and 4 * self.D == 3 * self.head_dim:
            base.update(PIECES=3, PIECE_DIM=self.head_dim // 4)  # D96 as 3 x 32 columns: no dot on padding
        lists = None if self.has_ids else (sch.programs, sch.seg_start, sch.tile_bits, sch.programs)
        return _Launch(cfg, sch, (self.B * sch.num_programs,), even, lists, base)

    def _schedule(self, which, cfg):
        keys_outer = which == "dkdv"
        n_out, n_in = (self.Sk, self.Sq) if keys_outer else (self.Sq, self.Sk)
        args = (self.layout, self.block, tile_size(n_out, cfg.outer), tile_size(n_in, cfg.inner))
        kw = dict(causal=self.causal, transpose=keys_outer, num_heads=self.Hkv if keys_outer else self.H,
                  device=self.device, seq_lens=(self.Sq, self.Sk), group=self.group if keys_outer else 1)
        sch = tile_schedule(*args, **kw)
        # Split rows that would outlast the launch (global rows); packed sequences compact each
        # row's list per batch element instead, which needs whole rows.
        if which == "fwd" and not self.has_ids:
            slots = _num_sms(self.device) * SPLIT_PROGRAMS_PER_SM
            cap = max(MIN_SPLIT_TILES, -(-self.B * sch.total_tiles // slots))
            if sch.max_tiles > cap:
                sch = tile_schedule(*args, split=cap, **kw)
        return sch


class _Plan:
    """Everything one call's kernels need besides q, k, v: the static plan (schedules, launch
    knobs) and this call's masks and per-batch lists."""

    def __init__(self, args: AttnArgs, q_shape, kv_shape, dtype, device):
        self.kpm, kpm_kind = _prep_mask(args.key_padding_mask, args.key_padding_mask_mode)
        self.am, am_kind = _prep_mask(args.attn_mask, args.attn_mask_mode)
        self.rpe, self.rpe_sb, self.rpe_sh = _prep_rpe(args.rpe, kv_shape[2])
        self.kpm_sb = self.kpm.stride(0) if self.kpm is not None else 0
        ids = args.segment_ids
        self.ids = None if ids is None else (ids if ids.is_contiguous() else ids.contiguous())
        flags = (args.block, args.causal, tuple(q_shape), tuple(kv_shape), dtype, device, kpm_kind, am_kind,
                 self.rpe is not None, ids is not None, args.backend)

        def build():
            return _Static(args.layout, *flags)

        st = self.static = build() if CONFIG_OVERRIDE else cached_per_layout(args.layout, ("plan", *flags), build)
        self.B, self.H, self.Sq, self.Sk, self.D, self.head_dim, self.group = \
            st.B, st.H, st.Sq, st.Sk, st.D, st.head_dim, st.group
        self.sm_scale, self.device = args.sm_scale, device
        self.configs = dict(st.configs)  # a caller (the tuner) may swap a pass's config
        self._lists = {}  # id(schedule) -> (schedule, its per-batch lists for segment_ids)

    def schedule(self, which):
        return self.static.launch(which, self.configs[which]).sch

    def even(self, which) -> bool:
        """No tile of this pass reaches past the end of its sequence (loads need no bounds)."""
        return self.static.launch(which, self.configs[which]).even

    def lists(self, sch):
        """(programs, seg_start, tile_bits, counts) with segment_ids: this call's per-batch
        compaction of the schedule's lists (``kernels/fused/segments.py``)."""
        hit = self._lists.get(id(sch))
        if hit is None or hit[0] is not sch:
            from .segments import segment_lists

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
        cols = self.static.launch(which, self.configs[which]).base.get("PIECE_DIM", self.head_dim)
        return tuple(_rows_descriptor(x, r, cols) for x, r in zip(ops, rows)), True

    def launch(self, kernel, which, sch, tensors, scales, **constexprs):
        """Launch ``kernel`` over ``sch``'s programs with ``tensors`` first, then the lists,
        masks, shapes and ``scales``; ``constexprs`` are the kernel's own (TMA, ...)."""
        st = self.static
        lc = st.launch(which, self.configs[which])
        if lc.sch is not sch:  # a schedule from elsewhere (tests): a launch of its own
            lc = st.launch_of(which, lc.cfg, sch)
        dummy = tensors[3]  # the output (fwd) or O (bwd): always a tensor, unlike q/k/v under TMA
        ids = self.ids
        args = (*tensors, *(lc.lists or self.lists(sch)), max(sch.num_tiles, 1), sch.num_rows,
                dummy if self.kpm is None else self.kpm, self.kpm_sb,
                dummy if self.am is None else self.am,
                dummy if self.rpe is None else self.rpe, self.rpe_sb, self.rpe_sh,
                dummy if ids is None else ids, 0 if ids is None else ids.stride(0),
                st.B, st.H, st.group, st.Sq, st.Sk, sch.num_outer, *scales)
        vkey = (kernel, *constexprs.items())
        variant = lc.variants.get(vkey)
        if variant is None:
            meta = dict(lc.base, **constexprs)
            key = (id(kernel), lc.cfg, *st.stage_key, *meta.values())  # meta's keys come in a fixed order
            variant = lc.variants[vkey] = (meta, key, [_STAGES_THAT_FIT.get(key, lc.cfg.num_stages)])
        meta, key, stages = variant
        # Masks, rpe and fp32 inputs stage more per tile than the tuned depth may leave room for:
        # the deepest pipeline that fits is found once per kernel variant and remembered.
        while True:
            try:
                kernel[lc.grid](*args, num_warps=lc.cfg.num_warps, num_stages=stages[0], **meta)
                break
            except _out_of_resources():
                if stages[0] <= 1:
                    raise
                stages[0] -= 1
                _STAGES_THAT_FIT[key] = stages[0]


def _out_of_resources():
    from triton.runtime.errors import OutOfResources

    return OutOfResources


_STAGES_THAT_FIT: dict = {}


# Rows are split only into pieces of at least this many tiles (merging costs a pass over D).
MIN_SPLIT_TILES = 16
# A row is split when it is longer than the launch's average work per this many programs per SM.
SPLIT_PROGRAMS_PER_SM = 8


def _num_sms(device) -> int:
    if device.type != "cuda":
        return 1
    return _sm_count(_device_index(device))


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _forward(plan: _Plan, q, k, v):
    """(out, lse) of contiguous q, k, v; lse in log2 units, +inf for a query attending nothing."""
    from .fwd import _attn_fwd, _attn_fwd_combine  # at first launch: see tests/interpreter.py

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
            HEAD_DIM=plan.head_dim, D=plan.D, BLOCK_M=sch.outer, EVEN=plan.even("fwd"))
    return out, lse


def _backward(plan: _Plan, q, k, v, out, lse, dout, dlse=None):
    """(dq, dk, dv); ``dlse``: the gradient of the natural-log lse, or None."""
    from .bwd import _attn_bwd

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

