"""Backward kernels of the fused block-sparse attention.

Deterministic by construction: dK/dV programs own a key tile and walk the column lists (query
tiles gathered from the transposed layout), dQ programs own a query tile and walk the row lists;
no atomics, so every gradient element is summed in a fixed order by one program. The dQ launch
runs first and also writes Delta = rowsum(dO * O) for its rows (every query row has a dQ
program, empty rows included), which the dK/dV launch then reads: no separate Delta pass.
"""
import triton
import triton.language as tl

from ._attn_common import _inner_tokens, _key_tile_scores, _load_rows, _load_tile, _program, _scores


@triton.jit
def _dkdv_tiles(dk, dv, k, v, tk, oi, Q, dO, LSE, Delta, base, row_base, t_begin, t_end,
                seg_start, tile_bits, qk_scale, bz, h, S,
                KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
                UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
                DOT_PREC: tl.constexpr, TMA: tl.constexpr, QUERY_MAJOR: tl.constexpr):
    ii = tl.arange(0, BLOCK_M)
    for t in range(t_begin, t_end):
        tq = _inner_tokens(seg_start, t, BLOCK_M, SEG, NSEG)
        first = 0
        if TMA:
            first = tl.load(seg_start + t)
        q = _load_tile(Q, base, first, tq, HEAD_DIM, TMA)
        do = _load_tile(dO, base, first, tq, HEAD_DIM, TMA)
        lse = tl.load(LSE + row_base + tq)
        delta = tl.load(Delta + row_base + tq)
        bits = 0
        if MASKED:
            bits = tl.load(tile_bits + t)
        if QUERY_MAJOR:
            # Scores as (queries x keys): K and V only ever appear as the B operand, so they can
            # stay in shared memory; P and dS are transposed on their way into the A operand.
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
            s = _scores(qk, qk_scale, tq[:, None], tk[None, :], bz, h, S, bits, oi[None, :],
                        ii[:, None], KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, UNIT, SEG, NSEG,
                        MASKED, CAUSAL, KPM_MODE, AM_MODE, HAS_RPE)
            p = tl.math.exp2(s - lse[:, None])
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PREC)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
            ds = (p * (dp - delta[:, None])).to(q.dtype)
            dk += tl.dot(tl.trans(ds), q, input_precision=DOT_PREC)
        else:
            qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC)
            sT = _scores(qkT, qk_scale, tq[None, :], tk[:, None], bz, h, S, bits, oi[:, None],
                         ii[None, :], KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, UNIT, SEG, NSEG,
                         MASKED, CAUSAL, KPM_MODE, AM_MODE, HAS_RPE)
            # lse is +inf for queries that attend to nothing: their probabilities are exactly 0.
            pT = tl.math.exp2(sT - lse[None, :])
            dv += tl.dot(pT.to(do.dtype), do, input_precision=DOT_PREC)
            dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
            dsT = pT * (dpT - delta[None, :])
            dk += tl.dot(dsT.to(q.dtype), q, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _dq_tiles(dq, q, do, lse, delta, tq, oi, K, V, base, t_begin, t_end,
              seg_start, tile_bits, qk_scale, bz, h, S,
              KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
              HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
              UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr,
              KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
              DOT_PREC: tl.constexpr, TMA: tl.constexpr):
    for t in range(t_begin, t_end):
        k, v, s = _key_tile_scores(q, tq, oi, K, V, base, t, seg_start, tile_bits, qk_scale,
                                   bz, h, S, KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
                                   HEAD_DIM, BLOCK_N, UNIT, SEG, NSEG, MASKED, CAUSAL,
                                   KPM_MODE, AM_MODE, HAS_RPE, DOT_PREC, TMA)
        p = tl.math.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
    return dq


@triton.jit
def _attn_bwd(Q, K, V, Out, dO, LSE, Delta, dQ, dK, dV,
              programs, seg_start, tile_bits,
              KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
              B, H, S, NUM_OUTER, qk_scale, sm_scale,
              HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
              CAUSAL: tl.constexpr,
              KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
              DOT_PREC: tl.constexpr, TMA: tl.constexpr, KEYS_OUTER: tl.constexpr,
              QUERY_MAJOR: tl.constexpr = False):
    """dK/dV (KEYS_OUTER: a key tile of BLOCK_N over gathered query tiles of BLOCK_M) or dQ.

    The dQ launch (not KEYS_OUTER) writes Delta; the dK/dV launch must come after it. With TMA,
    Q, K, V and dO are tensor descriptors over (B*H*S, HEAD_DIM) rows, each as tall as the tile
    it loads in this launch (single-segment inner tiles only).
    """
    bz, h, o, t0, tf, t1, slot = _program(programs, B, NUM_OUTER)
    bh = (bz * H + h).to(tl.int64)
    base = bh * S * HEAD_DIM
    d = tl.arange(0, HEAD_DIM)
    if KEYS_OUTER:
        oi = tl.arange(0, BLOCK_N)
        tk = o * BLOCK_N + oi
        k = _load_tile(K, base, o * BLOCK_N, tk, HEAD_DIM, TMA)
        v = _load_tile(V, base, o * BLOCK_N, tk, HEAD_DIM, TMA)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dk, dv = _dkdv_tiles(dk, dv, k, v, tk, oi, Q, dO, LSE, Delta, base, bh * S, t0, tf,
                             seg_start, tile_bits, qk_scale, bz, h, S,
                             KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
                             HEAD_DIM, BLOCK_M, UNIT, SEG, NSEG, False, CAUSAL,
                             KPM_MODE, AM_MODE, HAS_RPE, DOT_PREC, TMA, QUERY_MAJOR)
        dk, dv = _dkdv_tiles(dk, dv, k, v, tk, oi, Q, dO, LSE, Delta, base, bh * S, tf, t1,
                             seg_start, tile_bits, qk_scale, bz, h, S,
                             KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
                             HEAD_DIM, BLOCK_M, UNIT, SEG, NSEG, True, CAUSAL,
                             KPM_MODE, AM_MODE, HAS_RPE, DOT_PREC, TMA, QUERY_MAJOR)
        offs = base + tk.to(tl.int64)[:, None] * HEAD_DIM + d[None, :]
        tl.store(dK + offs, (dk * sm_scale).to(dK.dtype.element_ty))
        tl.store(dV + offs, dv.to(dV.dtype.element_ty))
    else:
        oi = tl.arange(0, BLOCK_M)
        tq = o * BLOCK_M + oi
        q = _load_tile(Q, base, o * BLOCK_M, tq, HEAD_DIM, TMA)
        do = _load_tile(dO, base, o * BLOCK_M, tq, HEAD_DIM, TMA)
        lse = tl.load(LSE + bh * S + tq)
        o = _load_rows(Out + base, tq, HEAD_DIM)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        tl.store(Delta + bh * S + tq, delta)
        dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        dq = _dq_tiles(dq, q, do, lse, delta, tq, oi, K, V, base, t0, tf,
                       seg_start, tile_bits, qk_scale, bz, h, S,
                       KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
                       HEAD_DIM, BLOCK_N, UNIT, SEG, NSEG, False, CAUSAL,
                       KPM_MODE, AM_MODE, HAS_RPE, DOT_PREC, TMA)
        dq = _dq_tiles(dq, q, do, lse, delta, tq, oi, K, V, base, tf, t1,
                       seg_start, tile_bits, qk_scale, bz, h, S,
                       KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
                       HEAD_DIM, BLOCK_N, UNIT, SEG, NSEG, True, CAUSAL,
                       KPM_MODE, AM_MODE, HAS_RPE, DOT_PREC, TMA)
        tl.store(dQ + base + tq.to(tl.int64)[:, None] * HEAD_DIM + d[None, :],
                 (dq * sm_scale).to(dQ.dtype.element_ty))
