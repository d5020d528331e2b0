"""Packed sequences: per batch element, drop the tiles whose query and key tokens share no segment.

A tile schedule is built once per layout; ``segment_ids`` change with every batch. One small
Triton launch per schedule compacts each (batch element, row)'s tile list to the tiles that can
hold a same-segment pair, on the device (no host sync, so a call stays CUDA-graph capturable and
free of data-dependent Python). Each row's kept tiles are written where its layout tiles start,
tiles wholly inside one segment (and full in the layout) first: they run unmasked.

The overlap test compares each sub-block's smallest and largest id: exact for sorted ids (the
usual packing) and a safe superset otherwise, since the attention kernels compare ids element
by element in every tile that is not wholly one segment.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..lut import TileSchedule

CHUNK = 16  # tiles examined at once per program


@triton.jit
def _id_range(ids, tokens, ok, axis: tl.constexpr):
    """Smallest and largest id over ``axis`` of a token tile, counting ``ok`` tokens only."""
    x = tl.load(ids + tokens, mask=ok, other=0).to(tl.int64)
    lo = tl.min(tl.where(ok, x, 2**62), axis)
    hi = tl.max(tl.where(ok, x, -2**62), axis)
    return lo, hi


@triton.jit
def _inner_ranges(seg_start, ids, tt, ok_t, S, SEG: tl.constexpr, NSEG: tl.constexpr):
    """(first id, last id) of each segment of tiles ``tt``: (CHUNK, NSEG) each, plus the starts.

    Inner tokens of grouped dK/dV lists are numbered g * S + token: the token is start % S."""
    s = tl.arange(0, NSEG)
    j = tl.arange(0, SEG)
    starts = tl.load(seg_start + tt[:, None] * NSEG + s[None, :], mask=ok_t[:, None], other=0)
    tok = (starts % S)[:, :, None] + j[None, None, :]
    lo, hi = _id_range(ids, tok, ok_t[:, None, None] & (tok < S), 2)
    return lo, hi, starts


@triton.jit
def _segment_filter(seg_start, tile_bits, row_ptr, row_full, IDS, ids_sb, S, NUM_OUTER,
                    OUT_SEG, OUT_BITS, COUNTS, NUM_TILES, NUM_ROWS,
                    OUTER: tl.constexpr, UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
                    CH: tl.constexpr):
    r = tl.program_id(0)
    bz = tl.program_id(1)
    ids = IDS + bz.to(tl.int64) * ids_sb
    out_seg = OUT_SEG + bz.to(tl.int64) * NUM_TILES * NSEG
    out_bits = OUT_BITS + bz.to(tl.int64) * NUM_TILES
    G: tl.constexpr = OUTER // UNIT
    t0 = tl.load(row_ptr + r)
    t1 = tl.load(row_ptr + r + 1)
    t_full = t0 + tl.load(row_full + r)
    # The outer tile's id range per unit (bit row) and overall.
    tok = (r % NUM_OUTER) * OUTER + tl.reshape(tl.arange(0, OUTER), (G, UNIT))
    u_lo, u_hi = _id_range(ids, tok, tok < S, 1)
    o_lo = tl.min(u_lo, 0)
    o_hi = tl.max(u_hi, 0)
    s_idx = tl.arange(0, NSEG)
    shift = (tl.arange(0, G)[:, None] * NSEG + s_idx[None, :]).to(tl.int64)  # (G, NSEG)
    n = t0 * 0  # int32, like the counts it accumulates
    n_full = n
    # Pass 0 writes the tiles that stay full (one segment throughout), pass 1 the other live ones.
    for pass_ in tl.static_range(2):
        end = t_full if pass_ == 0 else t1
        for c in range(t0, end, CH):
            tt = c + tl.arange(0, CH)
            ok_t = tt < end
            lo, hi, starts = _inner_ranges(seg_start, ids, tt, ok_t, S, SEG, NSEG)
            bits = tl.load(tile_bits + tt, mask=ok_t, other=0)
            # One segment throughout: the key ids' range equals both ends of the outer tile's.
            single = (tt < t_full) & (tl.min(lo, 1) == o_lo) & (tl.max(hi, 1) == o_lo) & (tl.max(hi, 1) == o_hi)
            if pass_ == 0:
                keep = ok_t & single
                new_bits = bits
            else:
                meets = (u_lo[None, :, None] <= hi[:, None, :]) & (lo[:, None, :] <= u_hi[None, :, None])
                on = ((bits[:, None, None] >> shift[None, :, :]) & 1) != 0
                # Distinct bits: the sum is their bitwise or.
                new_bits = tl.sum(tl.reshape(tl.where(meets & on, tl.full(meets.shape, 1, tl.int64) << shift[None, :, :], 0),
                                             (CH, G * NSEG)), 1)
                keep = ok_t & (new_bits != 0) & (single == 0)
            pos = n + tl.cumsum(keep.to(tl.int32), 0) - 1
            tl.store(out_seg + (t0 + pos)[:, None] * NSEG + s_idx[None, :], starts, mask=keep[:, None])
            tl.store(out_bits + t0 + pos, new_bits, mask=keep)
            n += tl.sum(keep.to(tl.int32), 0)
        if pass_ == 0:
            n_full = n
    tl.store(COUNTS + (bz * NUM_ROWS + r).to(tl.int64) * 2, n_full)
    tl.store(COUNTS + (bz * NUM_ROWS + r).to(tl.int64) * 2 + 1, n)


def segment_lists(sch: TileSchedule, segment_ids: torch.Tensor):
    """(seg_start (B, T*nseg), tile_bits (B, T), counts (B, rows, 2)) of ``sch`` for each batch
    element of ``segment_ids`` (B, S): per row, the kept tiles from its first layout tile on,
    and how many of them are full and in all."""
    B, S = segment_ids.shape
    T = max(sch.num_tiles, 1)
    dev = segment_ids.device
    seg = torch.empty((B, T * sch.nseg), dtype=torch.int32, device=dev)
    bits = torch.empty((B, T), dtype=torch.int64, device=dev)
    counts = torch.empty((B, sch.num_rows, 2), dtype=torch.int32, device=dev)
    _segment_filter[(sch.num_rows, B)](
        sch.seg_start, sch.tile_bits, sch.row_ptr, sch.row_full, segment_ids, segment_ids.stride(0), S,
        sch.num_outer, seg, bits, counts, T, sch.num_rows,
        OUTER=sch.outer, UNIT=sch.unit, SEG=sch.seg, NSEG=sch.nseg, CH=CHUNK)
    return seg, bits, counts
