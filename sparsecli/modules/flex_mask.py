"""A sparsecli block layout as a FlexAttention ``BlockMask``: ``to_block_mask``.

FlexAttention tiles attention in 128x128 blocks. Each 128-tile is *empty* (skipped), *full*
(computed without evaluating the mask) or *partial* (computed, masked per token pair by the
``mask_mod``). A layout of 128-blocks maps tile for tile; a layout of 16/32/64-blocks is
coarsened: a tile whose sub-blocks are all set is full, one with some set is partial, and the
``mask_mod`` looks each token pair's block up in the layout. Causal masking makes the diagonal
tiles partial and empties the tiles above it. The mask therefore visits only tiles the layout
touches.

The result is what ``create_block_mask(mask_mod, ...)`` would build for the same ``mask_mod``
(the same tile lists, handed to ``BlockMask.from_kv_blocks`` with the same ``mask_mod``), but it
is derived from the layout's blocks directly instead of evaluating the mask on all S x S token
pairs, which at 16 heads x 16,384 tokens would take gigabytes.

The ``mask_mod`` is never trivial, at block 128 too: with torch 2.11 the FLASH backend ignores
the tile lists of a mask whose ``mask_mod`` is a no-op and computes dense attention
(pytorch#188322), so ``from_kv_blocks`` without a real ``mask_mod`` is a trap.
"""
from __future__ import annotations

import torch

FLEX_BLOCK = 128  # FlexAttention's tile; the FLASH backend needs exactly this
BLOCKS = (16, 32, 64, 128)


def to_block_mask(layout, block: int, seq_len: int | None = None, *, causal: bool = False, device=None):
    """FlexAttention ``BlockMask`` giving exactly ``layout``'s attention (for any backend).

    ``layout``: ``(H, nb, nb)`` or ``(nb, nb)`` of 0/1 (a tensor or array; 2-D broadcasts over
    heads), query blocks down, key blocks across. ``block``: its block size, 16, 32, 64 or 128.
    ``seq_len``: tokens, at most ``nb * block`` (default); a shorter sequence takes the layout's
    top-left corner. ``causal``: also mask keys after their query inside diagonal blocks, as
    ``blocksparse_attention(..., causal=True)`` does. ``device``: default the layout's.
    """
    lay = _check_layout(layout, block)
    nb = lay.shape[-1]
    seq_len = nb * block if seq_len is None else seq_len
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 0 < seq_len <= nb * block:
        raise ValueError(f"seq_len must be an int in 1..{nb * block} (the layout covers {nb} blocks of "
                         f"{block} tokens), got {seq_len!r}")
    lay = lay.to(device if device is not None else lay.device)
    tiles = -(-seq_len // FLEX_BLOCK)
    r = FLEX_BLOCK // block
    table = _padded(lay, -(-seq_len // block), tiles * r)  # (H, tiles*r, tiles*r), zero past seq_len
    partial, full = _tile_kinds(table, tiles, r, seq_len, causal)
    kv_num, kv_idx = _ordered(partial)
    full_num, full_idx = _ordered(full)
    from torch.nn.attention.flex_attention import BlockMask

    return BlockMask.from_kv_blocks(kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=FLEX_BLOCK,
                                    mask_mod=_lookup_mask_mod(table, block, causal),
                                    seq_lengths=(seq_len, seq_len))


def _check_layout(layout, block) -> torch.Tensor:
    if isinstance(block, bool) or block not in BLOCKS:
        raise ValueError(f"block must be the layout's block size, one of {', '.join(map(str, BLOCKS))}; "
                         f"got {block!r}")
    lay = torch.as_tensor(layout)
    if lay.dim() == 2:
        lay = lay[None]
    if lay.dim() != 3 or lay.shape[-1] != lay.shape[-2] or lay.shape[-1] == 0 or lay.shape[0] == 0:
        raise ValueError(f"layout must be (heads, nb, nb) or (nb, nb) with nb >= 1, got shape {tuple(lay.shape)}")
    if lay.dtype != torch.bool:
        if lay.is_complex() or not bool(((lay == 0) | (lay == 1)).all()):
            raise ValueError("layout must hold 0/1 (or bool) block flags; pass layout != 0 to binarise it")
        lay = lay != 0
    return lay


def _padded(lay: torch.Tensor, keep: int, size: int) -> torch.Tensor:
    """The first ``keep`` blocks a side (those holding tokens of the sequence), zero-padded to ``size``."""
    out = torch.zeros(lay.shape[0], size, size, dtype=torch.bool, device=lay.device)
    out[:, :keep, :keep] = lay[:, :keep, :keep]
    return out


def _tile_kinds(table: torch.Tensor, tiles: int, r: int, seq_len: int, causal: bool):
    """(partial, full) bool ``(1, H, tiles, tiles)``: which 128-tiles need the mask_mod, which do not."""
    H, n = table.shape[0], table.shape[-1]
    touched = table
    if causal:  # block (a, b) has a pair with key <= query iff b <= a
        touched = table & torch.ones(n, n, dtype=torch.bool, device=table.device).tril()
    any_ = touched.view(H, tiles, r, tiles, r).any(4).any(2)
    full = table.view(H, tiles, r, tiles, r).all(4).all(2)
    # A tile is full only if every one of its 128 x 128 pairs is attended: the last tile of a
    # sequence that is not whole 128-tiles has pairs past its end, and causal diagonals miss half.
    inside = torch.arange(tiles, device=table.device) < seq_len // FLEX_BLOCK
    full &= inside[:, None] & inside[None, :]
    if causal:
        full &= torch.ones(tiles, tiles, dtype=torch.bool, device=table.device).tril(-1)
    return (any_ & ~full)[None], full[None]


def _ordered(tiles: torch.Tensor):
    """(count, indices) per tile row, set columns first in ascending order (from_kv_blocks' format)."""
    num = tiles.sum(-1, dtype=torch.int32)
    idx = torch.argsort(tiles.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return num.contiguous(), idx.contiguous()


def _lookup_mask_mod(table: torch.Tensor, block: int, causal: bool):
    per_head = table.shape[0] > 1

    def layout_mask(b, h, q_idx, kv_idx):
        keep = table[h if per_head else 0, q_idx // block, kv_idx // block]
        return keep & (kv_idx <= q_idx) if causal else keep

    return layout_mask


def from_block_mask(block_mask, block: int | None = None, *, causal: bool = False):
    """``(layout, block)`` of a FlexAttention ``BlockMask``: the inverse of :func:`to_block_mask`.

    Full tiles become set blocks and empty tiles zero blocks. A partial tile depends on the
    mask's ``mask_mod``, which sparsecli does not run over the sequence, so partial tiles are a
    ValueError naming them, except in two cases. Where the sequence ends inside the last tiles, the
    mask_mod is asked about their tokens before the end: kept in full, they are full tiles. With
    ``causal=True``, where the tiles on the diagonal may be partial (what
    ``to_block_mask(..., causal=True)`` makes): they become set blocks, and the caller runs the
    layout with ``causal=True``. ``block`` (default: the tile side, or the largest of 16/32/64/128
    dividing it) splits each tile into ``(tile / block)^2`` blocks, exactly. The layout is int64
    ``(H, nb, nb)`` on the CPU; a mask with batch entries that differ is refused.
    """
    from torch.nn.attention.flex_attention import BlockMask

    if not isinstance(block_mask, BlockMask):
        raise ValueError(f"from_block_mask takes a torch BlockMask, got {type(block_mask).__name__}")
    q_tile, k_tile = (int(s) for s in block_mask.BLOCK_SIZE)
    q_len, k_len = (int(s) for s in block_mask.seq_lengths)
    if q_len != k_len or q_tile != k_tile:
        raise ValueError(f"a layout is square: the BlockMask has {q_len} queries x {k_len} keys in "
                         f"{q_tile} x {k_tile} tiles; build it with equal lengths and tile sides")
    if block is None:
        block = next((b for b in reversed(BLOCKS) if q_tile % b == 0), None)
    if block not in BLOCKS or q_tile % block:
        raise ValueError(f"block must be one of {', '.join(map(str, BLOCKS))} and divide the BlockMask's "
                         f"{q_tile}-token tiles; got {block!r}")
    tiles = -(-q_len // q_tile)
    full = _dense_tiles(block_mask.full_kv_num_blocks, block_mask.full_kv_indices, tiles)
    partial = _dense_tiles(block_mask.kv_num_blocks, block_mask.kv_indices, tiles) & ~full
    if q_len % q_tile:  # the last tiles are partial where the sequence ends inside them
        ends = _kept_up_to_the_end(block_mask, partial, q_tile, q_len, causal)
        full, partial = full | ends, partial & ~ends
    diagonal = torch.eye(tiles, dtype=torch.bool)
    tiles_set = full | (partial & diagonal) if causal else full
    if causal:
        partial &= ~diagonal
    if bool(partial.any()):
        where = partial.nonzero()[:4].tolist()
        named = ", ".join(f"(batch {b}, head {h}, query tile {i}, key tile {j})" for b, h, i, j in where)
        more = f" and {int(partial.sum()) - len(where)} more" if partial.sum() > len(where) else ""
        hint = ("" if causal else "; if they are a causal diagonal, pass causal=True")
        raise ValueError(f"the BlockMask has partial tiles, which need its mask_mod (not run by sparsecli): "
                         f"{named}{more}{hint}")
    tiles_set = tiles_set.expand(torch.broadcast_shapes(full.shape, partial.shape))
    if tiles_set.shape[0] > 1 and not bool((tiles_set == tiles_set[:1]).all()):
        raise ValueError(f"the BlockMask's {tiles_set.shape[0]} batch entries differ; a layout is one per head "
                         "(build the mask with B=None, or pass one entry: block_mask[0])")
    r = q_tile // block
    lay = tiles_set[0].repeat_interleave(r, 1).repeat_interleave(r, 2)
    nb = -(-q_len // block)
    return lay[:, :nb, :nb].to(torch.int64).contiguous(), block


def _kept_up_to_the_end(block_mask, partial: torch.Tensor, tile: int, seq_len: int, causal: bool) -> torch.Tensor:
    """Which partial tiles of the last tile row or column keep every token the sequence has there
    (on the diagonal with ``causal``: exactly key <= query), asked of the mask's ``mask_mod`` on those
    tokens only. Flex marks such tiles partial because the sequence ends inside them; a mask_mod that
    cannot run (a mask loaded from a file) leaves them partial."""
    last = partial.shape[-1] - 1
    edge = torch.zeros_like(partial)
    edge[..., last, :] = True
    edge[..., :, last] = True
    kept = torch.zeros_like(partial)
    for b, h, i, j in (partial & edge).nonzero().tolist():
        q = torch.arange(i * tile, min((i + 1) * tile, seq_len))[:, None]
        k = torch.arange(j * tile, min((j + 1) * tile, seq_len))[None, :]
        try:
            got = torch.as_tensor(block_mask.mask_mod(torch.tensor(b), torch.tensor(h), q, k), dtype=torch.bool).cpu()
        except Exception:  # noqa: BLE001 (no runnable mask_mod: the tile stays partial and is named)
            return kept
        want = q >= k if causal and i == j else torch.ones(q.shape[0], k.shape[1], dtype=torch.bool)
        kept[b, h, i, j] = torch.equal(got.expand_as(want), want)
    return kept


def _dense_tiles(num, idx, tiles: int) -> torch.Tensor:
    """(B, H, tiles, tiles) bool of a BlockMask's (count, indices) tile lists (all False if None)."""
    if num is None:
        return torch.zeros(1, 1, tiles, tiles, dtype=torch.bool)
    num, idx = num.detach().cpu().long(), idx.detach().cpu().long()
    listed = torch.arange(idx.shape[-1]) < num[..., None]
    dense = torch.zeros(*idx.shape[:-1], max(tiles, idx.shape[-1]) + 1, dtype=torch.bool)
    dense.scatter_(-1, torch.where(listed, idx, dense.shape[-1] - 1), True)
    return dense[..., :tiles, :tiles]


def load_block_mask(path):
    """The BlockMask saved with ``torch.save`` in ``path`` (read with ``weights_only=True``).

    A ``mask_mod`` other than torch's ``noop_mask`` is replaced by a stand-in that refuses to run:
    :func:`from_block_mask` reads only the tile lists, and loading the original would mean
    importing (and trusting) the code it names. Returns None when the file holds no BlockMask.
    """
    from torch.nn.attention.flex_attention import BlockMask, noop_mask

    names = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    own = {f"{f.__module__}.{f.__qualname__}": f for f in (BlockMask, noop_mask)}
    if f"{BlockMask.__module__}.{BlockMask.__qualname__}" not in names:
        return None
    stand_ins = [(_unloaded_mask_mod, name) for name in names - set(own)]
    with torch.serialization.safe_globals([*own.values(), *stand_ins]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _unloaded_mask_mod(*args, **kwargs):
    """What a loaded BlockMask holds instead of its saved ``mask_mod``."""
    raise ValueError("this BlockMask was loaded from a file without its mask_mod; sparsecli uses only its tiles")
