"""Backward kernels of the fused block-sparse attention.

Deterministic by construction: dK/dV programs own a key tile and walk the column lists (query
tiles gathered from the transposed layout), dQ programs own a query tile and walk the row lists;
no atomics, so every gradient element is summed in a fixed order by one program. With grouped
heads a dK/dV program walks the lists of every query head of its group (its tiles' tokens are
numbered g * SQ + token), so dK and dV are the group's sums without any reduction pass. The dQ
launch runs first and also writes Delta = rowsum(dO * O) - dLSE for its rows (every query row
has a dQ program, empty rows included), which the dK/dV launch then reads.
"""
import triton
import triton.language as tl

from .common import (_batch_lists, _inner_tokens, _key_tile_scores, _load_rows, _load_tile,
                           _load_vec, _program, _scores, _store_rows)


@triton.jit
def _dkdv_tiles(dk, dv, k, v, tk, oi, Q, dO, LSE, Delta, q_row0, hk, t_begin, t_end,
                seg_start, tile_bits, qk_scale, bz, GROUP, SQ, SK,
                KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                HEAD_DIM: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr,
                UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
                MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
                SEGMENTS: tl.constexpr, EVEN: tl.constexpr,
                DOT_PREC: tl.constexpr, TMA: tl.constexpr, QUERY_MAJOR: tl.constexpr, GQA: tl.constexpr):
    ii = tl.arange(0, BLOCK_M)
    for t in range(t_begin, t_end):
        rows = _inner_tokens(seg_start, t, BLOCK_M, SEG, NSEG)  # g * SQ + token
        first = 0
        if TMA:
            first = tl.load(seg_start + t)
        h = hk
        tq = rows
        if GQA:  # a tile holds one query head's tokens
            g = tl.load(seg_start + t * NSEG) // SQ
            h = hk * GROUP + g
            tq = rows - g * SQ
        q_ok = tq < SQ
        q = _load_tile(Q, q_row0 * D, q_row0, first, rows, q_ok, HEAD_DIM, D, TMA, EVEN)
        do = _load_tile(dO, q_row0 * D, q_row0, first, rows, q_ok, HEAD_DIM, D, TMA, EVEN)
        # lse is +inf for queries that attend to nothing (and past SQ): their probabilities are 0.
        lse = _load_vec(LSE + q_row0, rows, q_ok, float("inf"), EVEN)
        delta = _load_vec(Delta + q_row0, rows, q_ok, 0.0, EVEN)
        bits = 0
        if MASKED:
            bits = tl.load(tile_bits + t)
        if QUERY_MAJOR:
            # Scores as (queries x keys): K and V only ever appear as the B operand, so they can
            # stay in shared memory; P and dS are transposed on their way into the A operand.
            qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
            s = _scores(qk, qk_scale, tq[:, None], tk[None, :], bz, h, SQ, SK, bits, oi[None, :],
                        ii[:, None], KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb, UNIT, SEG, NSEG,
                        MASKED, CAUSAL, KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN)
            p = tl.math.exp2(s - lse[:, None])
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=DOT_PREC)
            dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
            ds = (p * (dp - delta[:, None])).to(q.dtype)
            dk += tl.dot(tl.trans(ds), q, input_precision=DOT_PREC)
        else:
            qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC)
            sT = _scores(qkT, qk_scale, tq[None, :], tk[:, None], bz, h, SQ, SK, bits, oi[:, None],
                         ii[None, :], KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb, UNIT, SEG, NSEG,
                         MASKED, CAUSAL, KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN)
            pT = tl.math.exp2(sT - lse[None, :])
            dv += tl.dot(pT.to(do.dtype), do, input_precision=DOT_PREC)
            dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)
            dsT = pT * (dpT - delta[None, :])
            dk += tl.dot(dsT.to(q.dtype), q, input_precision=DOT_PREC)
    return dk, dv


@triton.jit
def _dq_tiles(dq, q, do, lse, delta, tq, oi, K, V, kv_base, kv_row0, t_begin, t_end,
              seg_start, tile_bits, qk_scale, bz, h, SQ, SK,
              KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
              HEAD_DIM: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
              UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
              MASKED: tl.constexpr, CAUSAL: tl.constexpr,
              KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
              SEGMENTS: tl.constexpr, EVEN: tl.constexpr, DOT_PREC: tl.constexpr, TMA: tl.constexpr):
    for t in range(t_begin, t_end):
        k, v, s = _key_tile_scores((q,), tq, oi, K, V, kv_base, kv_row0, t, seg_start, tile_bits, qk_scale,
                                   bz, h, SQ, SK, KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                                   HEAD_DIM, 1, D, BLOCK_N, UNIT, SEG, NSEG, MASKED, CAUSAL,
                                   KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN, DOT_PREC, TMA)
        k, v = k[0], v[0]  # the backward holds the head dim as one (padded) tile
        p = tl.math.exp2(s - lse[:, None])
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
    return dq


@triton.jit
def _attn_bwd(Q, K, V, Out, dO, LSE, Delta, dQ, dK, dV, DLSE,
              programs, seg_start, tile_bits, counts, NUM_TILES, NUM_ROWS,
              KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
              B, H, GROUP, SQ, SK, NUM_OUTER, qk_scale, sm_scale,
              HEAD_DIM: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
              CAUSAL: tl.constexpr,
              KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
              SEGMENTS: tl.constexpr, EVEN: tl.constexpr,
              DOT_PREC: tl.constexpr, TMA: tl.constexpr, KEYS_OUTER: tl.constexpr,
              QUERY_MAJOR: tl.constexpr = False, HAS_DLSE: tl.constexpr = False, GQA: tl.constexpr = False):
    """dK/dV (KEYS_OUTER: a key tile of BLOCK_N over gathered query tiles of BLOCK_M) or dQ.

    The dQ launch (not KEYS_OUTER) writes Delta; the dK/dV launch must come after it. With TMA,
    Q, K, V and dO are tensor descriptors over (batch * heads * tokens, D) rows, each as tall as
    the tile it loads in this launch (single-segment inner tiles only). ``DLSE``: the gradient
    of the (natural-log) lse output, when it has one. ``GQA``: GROUP > 1.
    """
    bz, h, o, t0, tf, t1, slot = _program(programs, counts, B, NUM_OUTER, NUM_ROWS, SEGMENTS)
    seg_start, tile_bits = _batch_lists(seg_start, tile_bits, bz, NUM_TILES, NSEG, SEGMENTS)
    HKV = H // GROUP
    if KEYS_OUTER:  # h is the key/value head
        kv_row0 = (bz * HKV + h).to(tl.int64) * SK
        q_row0 = (bz * H + h * GROUP).to(tl.int64) * SQ  # the group's first query head
        oi = tl.arange(0, BLOCK_N)
        tk = o * BLOCK_N + oi
        k_ok = tk < SK
        k = _load_tile(K, kv_row0 * D, kv_row0, o * BLOCK_N, tk, k_ok, HEAD_DIM, D, TMA, EVEN)
        v = _load_tile(V, kv_row0 * D, kv_row0, o * BLOCK_N, tk, k_ok, HEAD_DIM, D, TMA, EVEN)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
        dk, dv = _dkdv_tiles(dk, dv, k, v, tk, oi, Q, dO, LSE, Delta, q_row0, h, t0, tf,
                             seg_start, tile_bits, qk_scale, bz, GROUP, SQ, SK,
                             KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                             HEAD_DIM, D, BLOCK_M, UNIT, SEG, NSEG, False, CAUSAL,
                             KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN, DOT_PREC, TMA, QUERY_MAJOR, GQA)
        dk, dv = _dkdv_tiles(dk, dv, k, v, tk, oi, Q, dO, LSE, Delta, q_row0, h, tf, t1,
                             seg_start, tile_bits, qk_scale, bz, GROUP, SQ, SK,
                             KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                             HEAD_DIM, D, BLOCK_M, UNIT, SEG, NSEG, True, CAUSAL,
                             KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN, DOT_PREC, TMA, QUERY_MAJOR, GQA)
        _store_rows(dK + kv_row0 * D, tk, k_ok, (dk * sm_scale).to(dK.dtype.element_ty), HEAD_DIM, D, EVEN)
        _store_rows(dV + kv_row0 * D, tk, k_ok, dv.to(dV.dtype.element_ty), HEAD_DIM, D, EVEN)
    else:
        q_row0 = (bz * H + h).to(tl.int64) * SQ
        kv_row0 = (bz * HKV + h // GROUP).to(tl.int64) * SK
        oi = tl.arange(0, BLOCK_M)
        tq = o * BLOCK_M + oi
        q_ok = tq < SQ
        q = _load_tile(Q, q_row0 * D, q_row0, o * BLOCK_M, tq, q_ok, HEAD_DIM, D, TMA, EVEN)
        do = _load_tile(dO, q_row0 * D, q_row0, o * BLOCK_M, tq, q_ok, HEAD_DIM, D, TMA, EVEN)
        lse = _load_vec(LSE + q_row0, tq, q_ok, float("inf"), EVEN)
        out = _load_rows(Out + q_row0 * D, tq, q_ok, HEAD_DIM, D, EVEN)
        delta = tl.sum(out.to(tl.float32) * do.to(tl.float32), 1)
        if HAS_DLSE:  # d lse / d s = p: the lse gradient joins dS as -dLSE in Delta
            delta -= _load_vec(DLSE + q_row0, tq, q_ok, 0.0, EVEN)
        if EVEN:
            tl.store(Delta + q_row0 + tq, delta)
        else:
            tl.store(Delta + q_row0 + tq, delta, mask=q_ok)
        dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        dq = _dq_tiles(dq, q, do, lse, delta, tq, oi, K, V, kv_row0 * D, kv_row0, t0, tf,
                       seg_start, tile_bits, qk_scale, bz, h, SQ, SK,
                       KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                       HEAD_DIM, D, BLOCK_N, UNIT, SEG, NSEG, False, CAUSAL,
                       KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN, DOT_PREC, TMA)
        dq = _dq_tiles(dq, q, do, lse, delta, tq, oi, K, V, kv_row0 * D, kv_row0, tf, t1,
                       seg_start, tile_bits, qk_scale, bz, h, SQ, SK,
                       KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                       HEAD_DIM, D, BLOCK_N, UNIT, SEG, NSEG, True, CAUSAL,
                       KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN, DOT_PREC, TMA)
        _store_rows(dQ + q_row0 * D, tq, q_ok, (dq * sm_scale).to(dQ.dtype.element_ty), HEAD_DIM, D, EVEN)
