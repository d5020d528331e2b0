"""Forward kernel of the fused block-sparse attention: online softmax over gathered key tiles."""
import triton
import triton.language as tl

from .common import _batch_lists, _key_tile_scores, _load_pieces, _program, _store_rows


@triton.jit
def _fwd_tiles(acc, m_i, l_i, q, tq, oi, K, V, kv_base, kv_row0, t_begin, t_end,
               seg_start, tile_bits, qk_scale, bz, h, SQ, SK,
               KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
               PIECE_DIM: tl.constexpr, PIECES: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
               UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
               MASKED: tl.constexpr, CAUSAL: tl.constexpr,
               KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
               SEGMENTS: tl.constexpr, EVEN: tl.constexpr,
               DOT_PREC: tl.constexpr, TMA: tl.constexpr, POS_SCALE: tl.constexpr):
    # Only masks and biases can leave a row at -inf; full unbiased tiles skip the guard.
    GUARD: tl.constexpr = MASKED or HAS_RPE or KPM_MODE != 0 or AM_MODE != 0
    # Without a guard, the row max is taken on raw q k^T and the scale folded into one FMA per
    # score (needs a positive scale: max(x) * c = max(x * c) only for c > 0).
    RAW: tl.constexpr = POS_SCALE and not GUARD
    for t in range(t_begin, t_end):
        k, v, s = _key_tile_scores(q, tq, oi, K, V, kv_base, kv_row0, t, seg_start, tile_bits,
                                   1.0 if RAW else qk_scale, bz, h, SQ, SK,
                                   KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                                   PIECE_DIM, PIECES, D, BLOCK_N, UNIT, SEG, NSEG, MASKED, CAUSAL,
                                   KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN, DOT_PREC, TMA)
        if RAW:
            m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
            p = tl.math.exp2(s * qk_scale - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
        else:
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_use = m_new
            if GUARD:  # m_i itself keeps -inf, so a later tile's very negative scores still count
                m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.math.exp2(m_i - m_use)
            p = tl.math.exp2(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        p = p.to(v[0].dtype)
        acc0 = tl.dot(p, v[0], acc[0] * alpha[:, None], input_precision=DOT_PREC)
        if PIECES == 1:
            acc = (acc0,)
        else:
            acc = (acc0, tl.dot(p, v[1], acc[1] * alpha[:, None], input_precision=DOT_PREC),
                   tl.dot(p, v[2], acc[2] * alpha[:, None], input_precision=DOT_PREC))
        m_i = m_new
    return acc, m_i, l_i


@triton.jit
def _attn_fwd(Q, K, V, Out, LSE, PartAcc, PartML, NUM_SLOTS,
              programs, seg_start, tile_bits, counts, NUM_TILES, NUM_ROWS,
              KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
              B, H, GROUP, SQ, SK, NUM_OUTER, qk_scale,
              HEAD_DIM: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
              UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
              CAUSAL: tl.constexpr,
              KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
              SEGMENTS: tl.constexpr, EVEN: tl.constexpr,
              DOT_PREC: tl.constexpr, TMA: tl.constexpr, POS_SCALE: tl.constexpr,
              PIECES: tl.constexpr = 1, PIECE_DIM: tl.constexpr = 0):
    """One query tile over its gathered key tiles. TMA: Q, K and V are tensor descriptors over
    (batch * heads * tokens, D) rows (single-segment key tiles only); otherwise plain pointers.
    Query head h reads key/value head h // GROUP. ``PIECES`` = 3: rows are three tiles of
    ``PIECE_DIM`` columns (D = 3 * PIECE_DIM), else one of HEAD_DIM."""
    W: tl.constexpr = PIECE_DIM if PIECES == 3 else HEAD_DIM
    bz, h, o, t0, tf, t1, slot = _program(programs, counts, B, NUM_OUTER, NUM_ROWS, SEGMENTS)
    seg_start, tile_bits = _batch_lists(seg_start, tile_bits, bz, NUM_TILES, NSEG, SEGMENTS)
    bh = bz * H + h
    q_row0 = bh.to(tl.int64) * SQ
    kv_row0 = (bz * (H // GROUP) + h // GROUP).to(tl.int64) * SK
    oi = tl.arange(0, BLOCK_M)
    tq = o * BLOCK_M + oi
    q_ok = tq < SQ
    q = _load_pieces(Q, q_row0 * D, q_row0, o * BLOCK_M, tq, q_ok, W, PIECES, D, TMA, EVEN)
    if PIECES == 1:
        acc = (tl.zeros([BLOCK_M, W], dtype=tl.float32),)
    else:
        acc = (tl.zeros([BLOCK_M, W], dtype=tl.float32), tl.zeros([BLOCK_M, W], dtype=tl.float32),
               tl.zeros([BLOCK_M, W], dtype=tl.float32))
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, tq, oi, K, V, kv_row0 * D, kv_row0, t0, tf,
                               seg_start, tile_bits, qk_scale, bz, h, SQ, SK,
                               KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                               W, PIECES, D, BLOCK_N, UNIT, SEG, NSEG, False, CAUSAL,
                               KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN, DOT_PREC, TMA, POS_SCALE)
    acc, m_i, l_i = _fwd_tiles(acc, m_i, l_i, q, tq, oi, K, V, kv_row0 * D, kv_row0, tf, t1,
                               seg_start, tile_bits, qk_scale, bz, h, SQ, SK,
                               KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                               W, PIECES, D, BLOCK_N, UNIT, SEG, NSEG, True, CAUSAL,
                               KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN, DOT_PREC, TMA, POS_SCALE)
    if slot < 0:
        _fwd_finish(acc, m_i, l_i, Out, LSE, q_row0, tq, q_ok, W, PIECES, D, EVEN)
    else:  # one chunk of a split row: keep the unnormalised state for _attn_fwd_combine
        d = tl.arange(0, W)
        part = PartAcc + (bz * NUM_SLOTS + slot).to(tl.int64) * BLOCK_M * HEAD_DIM + oi[:, None] * HEAD_DIM
        for i in tl.static_range(PIECES):  # pieces side by side in the HEAD_DIM-wide row
            tl.store(part + i * W + d[None, :], acc[i])
        part = (bz * NUM_SLOTS + slot).to(tl.int64)
        tl.store(PartML + part * 2 * BLOCK_M + oi, m_i)
        tl.store(PartML + part * 2 * BLOCK_M + BLOCK_M + oi, l_i)


@triton.jit
def _fwd_finish(acc, m_i, l_i, Out, LSE, row0, tq, q_ok, PIECE_DIM: tl.constexpr, PIECES: tl.constexpr,
                D: tl.constexpr, EVEN: tl.constexpr):
    # A query with nothing to attend to: output 0, and lse = +inf so the backward's
    # exp2(s - lse) is 0 for it rather than NaN.
    empty = l_i == 0.0
    l_div = tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
    for i in tl.static_range(PIECES):
        _store_rows(Out + row0 * D, tq, q_ok, (acc[i] / l_div).to(Out.dtype.element_ty), PIECE_DIM, D,
                    EVEN, i * PIECE_DIM)
    if EVEN:
        tl.store(LSE + row0 + tq, lse)
    else:
        tl.store(LSE + row0 + tq, lse, mask=q_ok)


@triton.jit
def _attn_fwd_combine(PartAcc, PartML, Out, LSE, combine, NUM_SLOTS, B, H, SQ, NUM_OUTER,
                      HEAD_DIM: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, EVEN: tl.constexpr):
    """Merge the partial softmax states of a split row's programs (fixed order: deterministic)."""
    pid = tl.program_id(0)
    bz = pid % B
    entry = combine + (pid // B) * 3
    row = tl.load(entry)
    first = tl.load(entry + 1)
    n = tl.load(entry + 2)
    h = row // NUM_OUTER
    oi = tl.arange(0, BLOCK_M)
    d = tl.arange(0, HEAD_DIM)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for i in range(n):
        part = (bz * NUM_SLOTS + first + i).to(tl.int64)
        m_p = tl.load(PartML + part * 2 * BLOCK_M + oi)
        l_p = tl.load(PartML + part * 2 * BLOCK_M + BLOCK_M + oi)
        a_p = tl.load(PartAcc + part * BLOCK_M * HEAD_DIM + oi[:, None] * HEAD_DIM + d[None, :])
        m_new = tl.maximum(m_i, m_p)
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha, beta = tl.math.exp2(m_i - m_use), tl.math.exp2(m_p - m_use)
        acc = acc * alpha[:, None] + a_p * beta[:, None]
        l_i = l_i * alpha + l_p * beta
        m_i = m_new
    tq = (row % NUM_OUTER) * BLOCK_M + oi
    _fwd_finish((acc,), m_i, l_i, Out, LSE, (bz * H + h).to(tl.int64) * SQ, tq, tq < SQ, HEAD_DIM, 1, D, EVEN)
