"""FlashAttention-4 called directly with a block-sparse layout: the ``fa4-sparse`` peer.

FA4 (``flash_attn.cute.flash_attn_func``, flash-attn-4 4.0 betas) takes block sparsity as index
lists per (batch, head, row of blocks), FlexAttention's split into *partial* blocks (masked per
token by a ``mask_mod``) and *full* blocks (no mask): counts ``(B, H, rows)`` and column lists
``(B, H, rows, width)`` packed left, ascending, both int32 on the GPU. The forward walks query
rows (lists of key blocks), the backward key columns (lists of query blocks). A batch or head
dim of 1 broadcasts, and a list may be narrower than the number of blocks (FA4 reads entries
``0 .. count-1`` only).

A sparsecli layout has no partial blocks: every block it sets is attended in full. So its
128-blocks (FA4's tile on sm90) become full lists; the partial lists are empty. Without
Flex's ``mask_mod`` layer this is FA4's fastest block-sparse call.

Deterministic backward: FA4 reduce-adds dQ from its dK/dV pass in an order fixed per query
block by a semaphore, and for block sparsity it wants that order given: ``dq_write_order[b, h,
n, i]`` is the rank of key block ``n`` among the key blocks of query block ``bwd_idx[b, h, n,
i]`` (ascending; ``spt`` reverses it), one array per list (partial and full).

``block_lists`` and ``dq_write_order`` are index arithmetic on the CPU or GPU and need no FA4
(the CPU tests check them exactly); ``fa4_sparse_attention`` builds FA4's tuples and the call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FA4_BLOCK = 128  # FA4's block-sparse tile (sm90: 128 x 128 forward, 128-query rows backward)


def block_lists(layout: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(counts int32 ``(H, R)``, columns int32 ``(H, R, W)``) of a ``(H, R, C)`` 0/1 layout.

    Row ``r``'s set columns come first in ascending order; entries past the count are 0.
    ``W`` = the longest row (at least 1: FA4 wants a non-empty last dim).
    """
    lay = layout != 0
    counts = lay.sum(-1, dtype=torch.int32)
    width = max(1, int(counts.max())) if counts.numel() else 1
    # A stable sort of "not set" puts the set columns first, each group in column order.
    cols = torch.sort((~lay).to(torch.int8), dim=-1, stable=True).indices[..., :width]
    keep = torch.arange(width, device=lay.device) < counts[..., None]
    return counts, torch.where(keep, cols, 0).to(torch.int32)


def dq_write_order(layout: torch.Tensor, bwd_counts: torch.Tensor, bwd_rows: torch.Tensor) -> torch.Tensor:
    """Lock values for FA4's deterministic dQ, parallel to the backward lists ``bwd_rows``.

    ``layout``: ``(H, R, C)`` (query blocks x key blocks); ``bwd_counts``/``bwd_rows``: the
    lists of its transpose (``block_lists(layout.transpose(1, 2))``). Entry ``[h, n, i]`` is the
    rank of key block ``n`` among query block ``m = bwd_rows[h, n, i]``'s key blocks, counted
    from the lowest (FA4's ``spt=False`` order); 0 past the count.
    """
    lay = (layout != 0).to(torch.int32)
    rank = lay.cumsum(-1) - lay  # [h, m, n]: set key blocks before n in row m
    H, N, W = bwd_rows.shape
    h = torch.arange(H, device=lay.device)[:, None, None]
    n = torch.arange(N, device=lay.device)[None, :, None]
    order = rank[h, bwd_rows.long(), n]
    keep = torch.arange(W, device=lay.device) < bwd_counts[..., None]
    return torch.where(keep, order, 0).to(torch.int32)


@dataclass(frozen=True)
class BlockTensors:
    """A layout's full-block lists, forward and backward, and the backward's dQ order; every
    tensor has a leading batch dim of 1 (FA4 broadcasts it)."""

    fwd_counts: torch.Tensor  # (1, H, R)
    fwd_cols: torch.Tensor  # (1, H, R, W)
    bwd_counts: torch.Tensor  # (1, H, C)
    bwd_rows: torch.Tensor  # (1, H, C, W')
    dq_order: torch.Tensor  # (1, H, C, W'), parallel to bwd_rows


def fa4_layout(layout: torch.Tensor, block: int) -> torch.Tensor:
    """``layout`` (H, nb, nb) of ``block``-sized blocks as FA4's 128-blocks; ValueError when a
    layout block is not a whole number of them."""
    if block % FA4_BLOCK:
        raise ValueError(f"fa4-sparse takes layout blocks that are multiples of {FA4_BLOCK} "
                         f"(FA4's block-sparse tile), got {block}")
    f = block // FA4_BLOCK
    lay = layout if layout.dim() == 3 else layout[None]
    return lay.repeat_interleave(f, dim=1).repeat_interleave(f, dim=2) if f > 1 else lay


def block_tensors(layout: torch.Tensor, block: int) -> BlockTensors:
    lay = fa4_layout(layout, block)
    fc, fi = block_lists(lay)
    bc, bi = block_lists(lay.transpose(1, 2))
    return BlockTensors(fc[None], fi[None], bc[None], bi[None], dq_write_order(lay, bc, bi)[None])


def _fa4_tuples(cute_bs, bt: BlockTensors):
    """(forward, backward) ``BlockSparseTensorsTorch``: empty partial lists, the full lists."""
    def empty(counts):  # no partial blocks: count 0, one dummy entry per row
        return torch.zeros_like(counts), torch.zeros((*counts.shape, 1), dtype=torch.int32, device=counts.device)

    size = (FA4_BLOCK, FA4_BLOCK)
    fwd = cute_bs.BlockSparseTensorsTorch(*empty(bt.fwd_counts), bt.fwd_counts, bt.fwd_cols, block_size=size)
    mask_cnt, mask_idx = empty(bt.bwd_counts)
    bwd = cute_bs.BlockSparseTensorsTorch(mask_cnt, mask_idx, bt.bwd_counts, bt.bwd_rows, block_size=size,
                                          dq_write_order=torch.zeros_like(mask_idx),
                                          dq_write_order_full=bt.dq_order, spt=False)
    return fwd, bwd


def fa4_sparse_attention(cute, layout, block: int, sm_scale: float, *, causal: bool = False,
                         deterministic: bool = False):
    """``fn(q, k, v) -> out`` on ``(B, H, S, D)`` tensors: FA4 with ``layout`` as full blocks.

    ``cute``: the imported ``flash_attn.cute``. ``deterministic`` selects FA4's ordered dQ
    reduce (its sm90 kernels of 4.0.0b36 refuse it with block sparsity: the row then says so).
    Causal layouts are refused: their diagonal blocks would have to be partial blocks with a
    ``mask_mod``, which is the Flex path (``flex-flash``).
    """
    if causal:
        raise ValueError("fa4-sparse takes non-causal layouts (every block a full block); "
                         "use flex-flash for causal ones")
    import importlib

    fwd_bs, bwd_bs = _fa4_tuples(importlib.import_module("flash_attn.cute.block_sparsity"),
                                 block_tensors(layout, block))

    def fn(q, k, v):
        # FA4 takes (B, S, H, D); transpose(1, 2) is a view with unit stride in D, no copy.
        out = cute.flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                   softmax_scale=sm_scale, deterministic=deterministic,
                                   block_sparse_tensors=fwd_bs, block_sparse_tensors_bwd=bwd_bs)
        out = out[0] if isinstance(out, tuple) else out  # (out, lse) in the 4.0 betas
        return out.transpose(1, 2)

    return fn
