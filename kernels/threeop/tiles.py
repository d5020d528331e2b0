"""Triton helpers that turn runs of sparse blocks into tiles, shared by the matmul and softmax kernels.

A "chunk" is up to ``G`` consecutive entries of an index list (a CSR row, a CSC column or a group
of output blocks). Small blocks are grouped this way so that one ``tl.dot`` or one reduction works
on a ``BLOCK x G*BLOCK`` tile instead of a 16x16 one.

Gathered tiles are loaded as 3-D ``(.., G, BLOCK)`` tensors and reshaped to 2-D: the innermost
axis stays a plain ``arange``, so Triton can still prove contiguity and issue vector loads. With
``G == 1`` the block id is a scalar, which keeps the fast path (blocks 64 and 128) free of gathers.
Block ids are widened to int64: ``nnz * BLOCK**2`` passes 2**31 at long sequence lengths.
"""
import triton
import triton.language as tl


@triton.jit
def chunk_ids(id_ptr, start, end, G: tl.constexpr):
    """Entries ``start .. start+G`` of an index list (0 past ``end``) and their validity."""
    g = tl.arange(0, G)
    ok = start + g < end
    ids = tl.load(id_ptr + start + g, mask=ok, other=0).to(tl.int64)
    return ids, ok


@triton.jit
def chunk_offsets(start, end, BLOCK: tl.constexpr, G: tl.constexpr):
    """Element offsets ``(BLOCK, G, BLOCK)`` of the consecutive sparse blocks ``start .. start+G``.

    Blocks of one layout row are consecutive in nonzero() order, so a row chunk needs no ids.
    """
    i = tl.arange(0, BLOCK)
    g = tl.arange(0, G)
    blk = g.to(tl.int64) + start
    offs = blk[None, :, None] * (BLOCK * BLOCK) + i[:, None, None] * BLOCK + i[None, None, :]
    ok = (start + g < end)[None, :, None]
    return offs, ok


@triton.jit
def load_sparse_chunk(S, id_ptr, start, end, BLOCK: tl.constexpr, G: tl.constexpr, TRANS: tl.constexpr):
    """``(BLOCK, G*BLOCK)`` tile: sparse blocks ``id_ptr[start:start+G]`` side by side, absent ones 0.

    ``TRANS`` loads each block transposed (the op uses the stored operand's transpose).
    """
    i = tl.arange(0, BLOCK)
    if TRANS:  # tile (i, j) is stored element (j, i)
        inner = i[:, None] + i[None, :] * BLOCK
    else:
        inner = i[:, None] * BLOCK + i[None, :]
    if G == 1:
        blk = tl.load(id_ptr + start).to(tl.int64)
        return tl.load(S + blk * (BLOCK * BLOCK) + inner)
    else:
        blk, ok = chunk_ids(id_ptr, start, end, G)
        offs = blk[None, :, None] * (BLOCK * BLOCK) + inner[:, None, :]
        t = tl.load(S + offs, mask=ok[None, :, None], other=0.0)
        return tl.reshape(t, (BLOCK, G * BLOCK))


@triton.jit
def load_dense_pieces(D, fixed, fixed_ok, id_ptr, start, end, S_FIXED, S_PIECE,
                      F: tl.constexpr, BLOCK: tl.constexpr, G: tl.constexpr, PIECES_ON_ROWS: tl.constexpr):
    """Dense tile whose piece axis is ``G`` runs of ``BLOCK`` indices, run g at ``id_ptr[start+g]*BLOCK``.

    The other axis is ``fixed`` (``F`` indices, ``fixed_ok`` valid). The tile is ``(G*BLOCK, F)`` with
    ``PIECES_ON_ROWS`` (dsd: rows of B picked by the sparse blocks' columns), else ``(F, G*BLOCK)``
    (sdd: columns of B picked by the output blocks' columns). Runs past ``end`` read as 0.
    """
    j = tl.arange(0, BLOCK)
    fo = fixed.to(tl.int64) * S_FIXED
    if G == 1:
        blk = tl.load(id_ptr + start).to(tl.int64)
        piece = (blk * BLOCK + j) * S_PIECE
        if PIECES_ON_ROWS:
            return tl.load(D + piece[:, None] + fo[None, :], mask=fixed_ok[None, :], other=0.0)
        else:
            return tl.load(D + fo[:, None] + piece[None, :], mask=fixed_ok[:, None], other=0.0)
    else:
        blk, ok = chunk_ids(id_ptr, start, end, G)
        piece = (blk[:, None] * BLOCK + j[None, :]) * S_PIECE  # (G, BLOCK)
        if PIECES_ON_ROWS:
            t = tl.load(D + piece[:, :, None] + fo[None, None, :],
                        mask=ok[:, None, None] & fixed_ok[None, None, :], other=0.0)
            return tl.reshape(t, (G * BLOCK, F))
        else:
            t = tl.load(D + fo[:, None, None] + piece[None, :, :],
                        mask=fixed_ok[:, None, None] & ok[None, :, None], other=0.0)
            return tl.reshape(t, (F, G * BLOCK))
