"""Triton helpers shared by the forward, dQ and dK/dV kernels of the fused attention.

All three kernels work on an ``outer x inner`` score tile (queries x keys, or keys x queries in
dK/dV) and agree on how a program finds its tiles, which inner tokens a tile gathers, and how a
score is biased and masked: those live here once, so the forward and the backward cannot drift.
Scores are kept in log2 units (``qk * sm_scale * log2(e)``) so the kernels use ``exp2``.
"""
import triton
import triton.language as tl

@triton.jit
def _program(programs, B, NUM_OUTER):
    """(batch, head, outer tile, first tile, first masked tile, end tile, partial slot).

    Batch is innermost in the launch so the heaviest-first order spans every batch element.
    """
    pid = tl.program_id(0)
    bz = pid % B
    entry = programs + (pid // B) * 5
    row = tl.load(entry)
    t0 = tl.load(entry + 1)
    tf = tl.load(entry + 2)
    t1 = tl.load(entry + 3)
    slot = tl.load(entry + 4)
    return bz, row // NUM_OUTER, row % NUM_OUTER, t0, tf, t1, slot


@triton.jit
def _inner_tokens(seg_start, t, INNER: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr):
    """Token index of each of the INNER rows of gathered tile ``t``."""
    j = tl.arange(0, INNER)
    if NSEG == 1:  # one contiguous segment: a scalar load keeps the offsets provably contiguous
        return tl.load(seg_start + t) + j
    else:
        return tl.load(seg_start + t * NSEG + j // SEG) + j % SEG


@triton.jit
def _load_rows(base, tokens, HEAD_DIM: tl.constexpr):
    """Rows ``tokens`` of a contiguous (S, HEAD_DIM) slice."""
    d = tl.arange(0, HEAD_DIM)
    return tl.load(base + tokens.to(tl.int64)[:, None] * HEAD_DIM + d[None, :])


@triton.jit
def _scores(qk, qk_scale, tq, tk, bz, h, S, bits, oi, ii,
            KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
            UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
            MASKED: tl.constexpr, CAUSAL: tl.constexpr,
            KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr):
    """Scores of a tile in log2 units, with rpe/masks added and dropped entries at -inf.

    ``tq``/``tk`` are the query/key tokens and ``oi``/``ii`` the outer/inner positions inside the
    tile, all already broadcast to the tile's orientation (2-D-compatible shapes).
    """
    s = qk * qk_scale
    if HAS_RPE or KPM_MODE == 1 or AM_MODE == 1:
        bias = tl.zeros_like(s)
        if HAS_RPE:
            bias += tl.load(RPE + bz.to(tl.int64) * rpe_sb + h.to(tl.int64) * rpe_sh
                            + tq.to(tl.int64) * S + tk).to(tl.float32)
        if KPM_MODE == 1:
            bias += tl.load(KPM + bz * kpm_sb + tk).to(tl.float32)
        if AM_MODE == 1:
            bias += tl.load(AM + tq.to(tl.int64) * S + tk).to(tl.float32)
        # A finite "drop" value such as finfo(float32).min must stay finite after * log2(e).
        bias = tl.where(bias == float("-inf"), bias, tl.maximum(bias, -2.0e38))
        s += bias * 1.4426950408889634
    if MASKED:
        keep = ((bits >> ((oi // UNIT) * NSEG + ii // SEG)) & 1) != 0
        if CAUSAL:
            keep = keep & (tk <= tq)
        s = tl.where(keep, s, float("-inf"))
    if KPM_MODE == 2:
        s = tl.where(tl.load(KPM + bz * kpm_sb + tk) != 0, s, float("-inf"))
    if AM_MODE == 2:
        s = tl.where(tl.load(AM + tq.to(tl.int64) * S + tk) != 0, s, float("-inf"))
    return s


@triton.jit
def _load_tile(X, base, first, tokens, HEAD_DIM: tl.constexpr, TMA: tl.constexpr):
    """Rows ``tokens`` of the (S, HEAD_DIM) slice at element offset ``base``: X is a pointer, or
    with TMA a (rows, HEAD_DIM) tensor descriptor and ``tokens`` = ``first`` + arange (one bulk
    copy on Hopper)."""
    if TMA:
        return X.load([(base // HEAD_DIM + first).to(tl.int32), 0])
    else:
        return _load_rows(X + base, tokens, HEAD_DIM)


@triton.jit
def _key_tile_scores(q, tq, oi, K, V, base, t, seg_start, tile_bits, qk_scale, bz, h, S,
                     KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
                     HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                     UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
                     MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                     KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
                     DOT_PREC: tl.constexpr, TMA: tl.constexpr):
    """Gathered key tile ``t`` of a query-outer program: its K, V rows and the log2 scores."""
    tk = _inner_tokens(seg_start, t, BLOCK_N, SEG, NSEG)
    first = 0
    if TMA:  # only single-segment tiles take TMA: the tile is one run of tokens
        first = tl.load(seg_start + t)
    k = _load_tile(K, base, first, tk, HEAD_DIM, TMA)
    v = _load_tile(V, base, first, tk, HEAD_DIM, TMA)
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
    bits = 0
    if MASKED:
        bits = tl.load(tile_bits + t)
    s = _scores(qk, qk_scale, tq[:, None], tk[None, :], bz, h, S, bits, oi[:, None],
                tl.arange(0, BLOCK_N)[None, :], KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh,
                UNIT, SEG, NSEG, MASKED, CAUSAL, KPM_MODE, AM_MODE, HAS_RPE)
    return k, v, s
