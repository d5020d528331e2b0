"""FlexAttention fed a sparsecli block layout: the baseline the fused kernel is measured against.

Flex's block-sparse path works on 128x128 blocks. A layout at block 128 becomes a ``BlockMask``
whose every non-zero block is a *full* block (no mask_mod evaluated), which is Flex at its best.
A layout of smaller blocks (16/32/64) is coarsened to 128: a 128-block whose sub-blocks are all
set is full, one with some set is partial and evaluated through a ``mask_mod`` that looks the
token pair up in the fine layout. With ``causal=True`` the diagonal 128-blocks are partial too.

torch's flex_attention module is imported lazily (it pulls in the compiler stack).
"""
from __future__ import annotations

import functools

import torch

FLEX_BLOCK = 128


def _index_lists(blocks: torch.Tensor):
    """(num, indices) of a (H, R, C) bool block grid, in from_kv_blocks' (1, H, R[, C]) shapes."""
    num = blocks.sum(-1, dtype=torch.int32)
    # Stable sort puts each row's set columns first, ascending.
    idx = torch.sort((~blocks).to(torch.int8), dim=-1, stable=True).indices.to(torch.int32)
    return num[None].contiguous(), idx[None].contiguous()


def flex_block_mask(layout: torch.Tensor, block: int, seq_len: int, *, causal: bool = False,
                    device="cuda"):
    """A FlexAttention ``BlockMask`` computing exactly ``layout`` (and ``causal``) at ``block``.

    ``layout`` is ``(H, S/block, S/block)`` or 2-D (broadcast over heads: the mask gets H=1).
    """
    from torch.nn.attention.flex_attention import BlockMask

    lay = torch.as_tensor(layout).to(device).bool()
    if lay.dim() == 2:
        lay = lay[None]
    if block % FLEX_BLOCK and FLEX_BLOCK % block:
        raise ValueError(f"block must divide or be a multiple of {FLEX_BLOCK}, got {block}")
    if block < FLEX_BLOCK and seq_len % FLEX_BLOCK:
        # Coarsening to Flex's 128-blocks needs whole 128-blocks (a reshape otherwise fails).
        raise ValueError(f"Flex needs seq_len a multiple of {FLEX_BLOCK} to run a block-{block} layout "
                         f"(it coarsens to {FLEX_BLOCK}x{FLEX_BLOCK} blocks), got seq_len {seq_len}")
    nb = seq_len // FLEX_BLOCK
    if block >= FLEX_BLOCK:
        r = block // FLEX_BLOCK
        coarse_any = lay.repeat_interleave(r, 1).repeat_interleave(r, 2)
        coarse_all = coarse_any
    else:
        r = FLEX_BLOCK // block
        grid = lay.reshape(lay.shape[0], nb, r, nb, r)
        coarse_any, coarse_all = grid.any(4).any(2), grid.all(4).all(2)
    if causal:
        tri = torch.ones(nb, nb, dtype=torch.bool, device=device)
        coarse_any = coarse_any & tri.tril()
        coarse_all = coarse_all & tri.tril(-1)
    partial = coarse_any & ~coarse_all
    kv_num, kv_idx = _index_lists(partial)
    full_num, full_idx = _index_lists(coarse_all)
    mask_mod = None
    if bool(partial.any()):
        mask_mod = _fine_mask_mod(lay, block, causal)
    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=FLEX_BLOCK,
                                    mask_mod=mask_mod, seq_lengths=(seq_len, seq_len))


def _fine_mask_mod(lay: torch.Tensor, block: int, causal: bool):
    per_head = lay.shape[0] > 1

    def mask_mod(b, h, q_idx, kv_idx):
        keep = lay[h if per_head else 0, q_idx // block, kv_idx // block]
        return keep & (kv_idx <= q_idx) if causal else keep

    return mask_mod


@functools.lru_cache(maxsize=1)
def compiled_flex_attention():
    """``torch.compile(flex_attention)``, built once per process."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_attention_call(q, k, v, block_mask, sm_scale=None):
    """Run the compiled Flex kernel on ``(B, H, S, D)`` tensors."""
    return compiled_flex_attention()(q, k, v, block_mask=block_mask, scale=sm_scale)
