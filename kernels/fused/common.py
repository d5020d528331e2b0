"""Triton helpers shared by the forward, dQ and dK/dV kernels of the fused attention.

All three kernels work on an ``outer x inner`` score tile (queries x keys, or keys x queries in
dK/dV) and agree on how a program finds its tiles, which inner tokens a tile gathers, and how a
score is biased and masked: those live here once, so the forward and the backward cannot drift.
Scores are kept in log2 units (``qk * sm_scale * log2(e)``) so the kernels use ``exp2``.

Shapes: q ``(B, H, SQ, D)``, k and v ``(B, H // GROUP, SK, D)``, all contiguous. ``HEAD_DIM`` is
the power of two the tiles use, ``D`` the tensors' head dim (a multiple of 8, padded with zeros
on load). ``EVEN``: every tile lies inside its sequence, so loads need no bounds.

The forward can hold a row as ``PIECES`` tiles of ``PIECE_DIM`` columns instead (a tuple): head
dims of 3 * 2^k (48, 96, 192) run as three power-of-two pieces (tl.dot takes only power-of-two
shapes), so their dots do no work on padding.
"""
import triton
import triton.language as tl


@triton.jit
def _program(programs, counts, B, NUM_OUTER, NUM_ROWS, SEGMENTS: tl.constexpr):
    """(batch, head, outer tile, first tile, first masked tile, end tile, partial slot).

    Batch is innermost in the launch so the heaviest-first order spans every batch element. With
    ``SEGMENTS`` each batch element has its own compacted lists: the row's live tiles start
    where its layout tiles do, ``counts`` says how many (full, all).
    """
    pid = tl.program_id(0)
    bz = pid % B
    entry = programs + (pid // B) * 5
    row = tl.load(entry)
    t0 = tl.load(entry + 1)
    tf = tl.load(entry + 2)
    t1 = tl.load(entry + 3)
    slot = tl.load(entry + 4)
    if SEGMENTS:
        c = counts + (bz * NUM_ROWS + row % NUM_ROWS).to(tl.int64) * 2
        tf = t0 + tl.load(c)
        t1 = t0 + tl.load(c + 1)
    return bz, row // NUM_OUTER, row % NUM_OUTER, t0, tf, t1, slot


@triton.jit
def _batch_lists(seg_start, tile_bits, bz, NUM_TILES, NSEG: tl.constexpr, SEGMENTS: tl.constexpr):
    """This batch element's tile lists (one shared copy without segments)."""
    if SEGMENTS:
        seg_start += bz.to(tl.int64) * NUM_TILES * NSEG
        tile_bits += bz.to(tl.int64) * NUM_TILES
    return seg_start, tile_bits


@triton.jit
def _inner_tokens(seg_start, t, INNER: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr):
    """Token index of each of the INNER rows of gathered tile ``t``."""
    j = tl.arange(0, INNER)
    if NSEG == 1:  # one contiguous segment: a scalar load keeps the offsets provably contiguous
        return tl.load(seg_start + t) + j
    else:
        return tl.load(seg_start + t * NSEG + j // SEG) + j % SEG


@triton.jit
def _load_rows(base, tokens, ok, HEAD_DIM: tl.constexpr, D: tl.constexpr, EVEN: tl.constexpr,
               COL: tl.constexpr = 0):
    """Rows ``tokens`` of a contiguous (S, D) slice as a (len, HEAD_DIM) tile of the columns from
    ``COL``; ``ok`` rows only unless EVEN, zeros past D."""
    d = tl.arange(0, HEAD_DIM)
    ptrs = base + tokens.to(tl.int64)[:, None] * D + COL + d[None, :]
    if COL + HEAD_DIM > D:
        if EVEN:
            x = tl.load(ptrs, mask=(d < D - COL)[None, :], other=0.0)
        else:
            x = tl.load(ptrs, mask=ok[:, None] & (d < D - COL)[None, :], other=0.0)
    elif EVEN:
        x = tl.load(ptrs)
    else:
        x = tl.load(ptrs, mask=ok[:, None], other=0.0)
    return x


@triton.jit
def _store_rows(base, tokens, ok, x, HEAD_DIM: tl.constexpr, D: tl.constexpr, EVEN: tl.constexpr,
                COL: tl.constexpr = 0):
    d = tl.arange(0, HEAD_DIM)
    ptrs = base + tokens.to(tl.int64)[:, None] * D + COL + d[None, :]
    if COL + HEAD_DIM > D:
        if EVEN:
            tl.store(ptrs, x, mask=(d < D - COL)[None, :])
        else:
            tl.store(ptrs, x, mask=ok[:, None] & (d < D - COL)[None, :])
    elif EVEN:
        tl.store(ptrs, x)
    else:
        tl.store(ptrs, x, mask=ok[:, None])


@triton.jit
def _load_vec(ptr, idx, ok, other, EVEN: tl.constexpr):
    if EVEN:
        x = tl.load(ptr + idx)
    else:
        x = tl.load(ptr + idx, mask=ok, other=other)
    return x


@triton.jit
def _scores(qk, qk_scale, tq, tk, bz, h, SQ, SK, bits, oi, ii,
            KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
            UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
            MASKED: tl.constexpr, CAUSAL: tl.constexpr,
            KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
            SEGMENTS: tl.constexpr, EVEN: tl.constexpr):
    """Scores of a tile in log2 units, with rpe/masks added and dropped entries at -inf.

    ``tq``/``tk`` are the query/key tokens and ``oi``/``ii`` the outer/inner positions inside the
    tile, all already broadcast to the tile's orientation (2-D-compatible shapes). Only masked
    tiles can hold keys past SK or pairs of different segments; out-of-range queries of a tile
    are never stored (forward, dQ) or have lse +inf (dK/dV), so their scores do not matter.
    """
    ok = (tq < SQ) & (tk < SK)  # for loads only: unused when EVEN
    s = qk * qk_scale
    if HAS_RPE or KPM_MODE == 1 or AM_MODE == 1:
        bias = tl.zeros_like(s)
        if HAS_RPE:
            bias += _load_vec(RPE + bz.to(tl.int64) * rpe_sb + h.to(tl.int64) * rpe_sh,
                              tq.to(tl.int64) * SK + tk, ok, 0.0, EVEN).to(tl.float32)
        if KPM_MODE == 1:
            bias += _load_vec(KPM + bz * kpm_sb, tk, tk < SK, 0.0, EVEN).to(tl.float32)
        if AM_MODE == 1:
            bias += _load_vec(AM, tq.to(tl.int64) * SK + tk, ok, 0.0, EVEN).to(tl.float32)
        # A finite "drop" value such as finfo(float32).min must stay finite after * log2(e).
        bias = tl.where(bias == float("-inf"), bias, tl.maximum(bias, -2.0e38))
        s += bias * 1.4426950408889634
    if MASKED:
        keep = ((bits >> ((oi // UNIT) * NSEG + ii // SEG)) & 1) != 0
        if CAUSAL:
            keep = keep & (tk <= tq + (SK - SQ))
        if not EVEN:
            keep = keep & ok
        if SEGMENTS:
            ids = IDS + bz.to(tl.int64) * ids_sb
            keep = keep & (_load_vec(ids, tq, tq < SQ, -1, EVEN) == _load_vec(ids, tk, tk < SK, -2, EVEN))
        s = tl.where(keep, s, float("-inf"))
    if KPM_MODE == 2:
        s = tl.where(_load_vec(KPM + bz * kpm_sb, tk, tk < SK, 1, EVEN) != 0, s, float("-inf"))
    if AM_MODE == 2:
        s = tl.where(_load_vec(AM, tq.to(tl.int64) * SK + tk, ok, 1, EVEN) != 0, s, float("-inf"))
    return s


@triton.jit
def _load_tile(X, base, row0, first, tokens, ok, HEAD_DIM: tl.constexpr, D: tl.constexpr,
               TMA: tl.constexpr, EVEN: tl.constexpr, COL: tl.constexpr = 0):
    """Rows ``tokens`` (columns from ``COL``) of the (S, D) slice at element offset ``base``: X is
    a pointer, or with TMA a (rows, HEAD_DIM) tensor descriptor over every (batch, head, token)
    row, ``row0`` the slice's first row and ``tokens`` = ``first`` + arange (one bulk copy on
    Hopper; columns past D and rows past the tensor read as 0, rows past the slice are other
    heads' and get masked)."""
    if TMA:
        x = X.load([(row0 + first).to(tl.int32), COL])
    else:
        x = _load_rows(X + base, tokens, ok, HEAD_DIM, D, EVEN, COL)
    return x


@triton.jit
def _load_pieces(X, base, row0, first, tokens, ok, PIECE_DIM: tl.constexpr, PIECES: tl.constexpr,
                 D: tl.constexpr, TMA: tl.constexpr, EVEN: tl.constexpr):
    """``_load_tile`` as a tuple of ``PIECES`` (1 or 3) tiles of ``PIECE_DIM`` columns."""
    x0 = _load_tile(X, base, row0, first, tokens, ok, PIECE_DIM, D, TMA, EVEN)
    if PIECES == 1:
        return (x0,)
    else:
        return (x0, _load_tile(X, base, row0, first, tokens, ok, PIECE_DIM, D, TMA, EVEN, PIECE_DIM),
                _load_tile(X, base, row0, first, tokens, ok, PIECE_DIM, D, TMA, EVEN, 2 * PIECE_DIM))


@triton.jit
def _dot_pieces(a, b, DOT_PREC: tl.constexpr, PIECES: tl.constexpr):
    """a @ b^T over a head dim held as pieces: the pieces' products summed in one accumulator."""
    s = tl.dot(a[0], tl.trans(b[0]), input_precision=DOT_PREC)
    for i in tl.static_range(1, PIECES):
        s = tl.dot(a[i], tl.trans(b[i]), s, input_precision=DOT_PREC)
    return s


@triton.jit
def _key_tile_scores(q, tq, oi, K, V, kv_base, kv_row0, t, seg_start, tile_bits, qk_scale, bz, h, SQ, SK,
                     KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                     PIECE_DIM: tl.constexpr, PIECES: tl.constexpr, D: tl.constexpr, BLOCK_N: tl.constexpr,
                     UNIT: tl.constexpr, SEG: tl.constexpr, NSEG: tl.constexpr,
                     MASKED: tl.constexpr, CAUSAL: tl.constexpr,
                     KPM_MODE: tl.constexpr, AM_MODE: tl.constexpr, HAS_RPE: tl.constexpr,
                     SEGMENTS: tl.constexpr, EVEN: tl.constexpr, DOT_PREC: tl.constexpr, TMA: tl.constexpr):
    """Gathered key tile ``t`` of a query-outer program: its K, V rows (tuples of pieces, like
    ``q``) and the log2 scores."""
    tk = _inner_tokens(seg_start, t, BLOCK_N, SEG, NSEG)
    first = 0
    if TMA:  # only single-segment tiles take TMA: the tile is one run of tokens
        first = tl.load(seg_start + t)
    k_ok = tk < SK
    k = _load_pieces(K, kv_base, kv_row0, first, tk, k_ok, PIECE_DIM, PIECES, D, TMA, EVEN)
    v = _load_pieces(V, kv_base, kv_row0, first, tk, k_ok, PIECE_DIM, PIECES, D, TMA, EVEN)
    qk = _dot_pieces(q, k, DOT_PREC, PIECES)
    bits = 0
    if MASKED:
        bits = tl.load(tile_bits + t)
    s = _scores(qk, qk_scale, tq[:, None], tk[None, :], bz, h, SQ, SK, bits, oi[:, None],
                tl.arange(0, BLOCK_N)[None, :], KPM, kpm_sb, AM, RPE, rpe_sb, rpe_sh, IDS, ids_sb,
                UNIT, SEG, NSEG, MASKED, CAUSAL, KPM_MODE, AM_MODE, HAS_RPE, SEGMENTS, EVEN)
    return k, v, s
