"""How many stacked attention layers it takes until every query block has seen every key block.

Layer k's query block i depends on key block j when a path of at most k hops joins them in
``A | I`` (A the layout, I the residual stream that keeps each block's own information), so the
answer is the largest shortest-path distance (None when some pair is never joined).

All sources are searched at once on bit sets: row i of ``R_k`` holds, one bit per key block, what
query i has seen after k layers, and ``R_{k+1}[i] = OR_{j : A[i, j]} R_k[j]`` is a gather of the
rows the layout lists followed by one segmented OR (``numpy.bitwise_or.reduceat``). A step costs
``nnz * nb / 64`` word operations, so sparse layouts with a short reach (BigBird, random blocks)
take milliseconds per head, and long-reach layouts (thin windows) are sparse enough that their
many steps stay cheap. Heads are stacked into one graph, a chunk at a time, and only their
non-zero indices are read: the dense layout is never copied.
"""
from __future__ import annotations

import numpy as np

CHUNK_WORDS = 1 << 22  # bound on the gathered words per step (32 MiB), across the stacked heads


def layers_to_full_reach(heads, causal: bool = False) -> list[int | None]:
    """For each ``(nb, nb)`` layout in ``heads`` (tensors or arrays): the fewest stacked layers
    after which every query block has seen every key block (every key block at or before it when
    ``causal``), or None if that never happens."""
    heads = list(heads)
    if not heads:
        return []
    nb = heads[0].shape[-1]
    return reach_from_indices([np.flatnonzero(np.asarray(h) != 0) for h in heads], nb, causal)


def reach_from_indices(flat: list[np.ndarray], nb: int, causal: bool = False) -> list[int | None]:
    """``layers_to_full_reach`` of heads given as the sorted flat indices ``i * nb + j`` of their
    non-zero blocks (what ``numpy.flatnonzero`` returns for one head)."""
    if nb == 0:
        return [0] * len(flat)
    out: list[int | None] = []
    start = 0
    while start < len(flat):  # as many heads per chunk as keep the gathered words under CHUNK_WORDS
        end, words = start, 0
        while end < len(flat) and (end == start or words < CHUNK_WORDS):
            words += (flat[end].size + nb) * _words(nb)
            end += 1
        out.extend(_reach(flat[start:end], nb, causal))
        start = end
    return out


def _words(nb: int) -> int:
    return (nb + 63) // 64


def _reach(flat: list[np.ndarray], nb: int, causal: bool) -> list[int | None]:
    n, w = len(flat), _words(nb)
    diagonal = np.arange(nb, dtype=np.int64) * (nb + 1)
    # The stacked graph A | I: node h * nb + i lists h * nb + j for every j it attends, itself
    # included (twice if A has its diagonal: harmless under OR, and cheaper than deduplicating).
    nodes = [np.sort(np.concatenate([f.astype(np.int64), diagonal])) + h * nb * nb for h, f in enumerate(flat)]
    rows, key = np.divmod(np.concatenate(nodes), nb)  # rows = h * nb + i (sorted), key = j
    cols = key + rows // nb * nb
    indptr = np.searchsorted(rows, np.arange(n * nb))  # every row has its diagonal: no empty segment
    reach = np.zeros((n * nb, w), dtype=np.uint64)  # R_1 = A | I, as bits
    np.bitwise_or.at(reach, (rows, key // 64), np.left_shift(np.uint64(1), (key % 64).astype(np.uint64)))
    target = _target(nb, causal)

    result: list[int | None] = [None] * n
    active = np.arange(n)  # heads neither full nor stuck yet
    layers = 1
    while active.size:
        r = reach.reshape(n, nb, w)
        full = ((r[active] & target) == target).all(axis=(1, 2))
        for a in active[full]:
            result[a] = layers
        active = active[~full]
        if not active.size:
            break
        nxt = np.bitwise_or.reduceat(reach[cols], indptr, axis=0)
        grew = (nxt.reshape(n, nb, w)[active] != r[active]).any(axis=(1, 2))
        active = active[grew]  # a head that stopped growing never becomes full: None
        reach = nxt
        layers += 1
    return result


def _target(nb: int, causal: bool) -> np.ndarray:
    """(nb, words) bits every query must have seen: all key blocks, or those at or before it."""
    last = np.arange(nb) if causal else np.full(nb, nb - 1)  # the last key block row i must see
    word = np.arange(_words(nb))[None, :]
    upto = last[:, None] - word * 64  # bits 0..upto of a word are wanted
    ones = np.uint64(0xFFFFFFFFFFFFFFFF)
    partial = np.left_shift(np.uint64(1), (np.clip(upto, 0, 62) + 1).astype(np.uint64)) - np.uint64(1)
    return np.where(upto >= 63, ones, np.where(upto < 0, np.uint64(0), partial)).astype(np.uint64)
