"""Which block layout each layer of a Hugging Face model runs (``register_attention``'s inputs).

A layout arrives as a ``SparsityConfig``, a 0/1 tensor, a FlexAttention ``BlockMask`` or the
file of one; ``layer_layout`` checks it and builds the layer's :class:`LayerLayout`: a CPU bool
``(Hl, nb, nb)`` with its block and longest key length, which keeps the crops a call needs (one
tensor per crop, so each crop keeps its own kernel plans) and, for static-cache decode steps,
each row as a fixed-size list of key blocks on the device (:class:`DecodeTables`).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from ..kernels.limits import BLOCKS

_CROPS_KEPT = 32  # layout crops kept per layer: a decode walks one row per block of tokens


@dataclass(eq=False)
class LayerLayout:
    """One layer's layout as it runs: (Hl, nb, nb) CPU bool, its block, the longest key length,
    and whether its diagonal blocks came from a causal BlockMask (then only causal modules may use it)."""

    layout: torch.Tensor
    block: int
    max_len: int
    causal_only: bool = False

    def __post_init__(self):
        self.crops = OrderedDict()  # (first row, rows, key blocks) -> its own tensor (its own kernel plans)
        self.decode = {}  # (device, causal) -> DecodeTables

    def crop(self, r0: int, rows: int, cols: int) -> torch.Tensor:
        nb = self.layout.shape[-1]
        if (r0, rows, cols) == (0, nb, nb):
            return self.layout
        key = (r0, rows, cols)
        hit = self.crops.get(key)
        if hit is None:
            hit = self.crops[key] = self.layout[:, r0:r0 + rows, :cols].clone()
            while len(self.crops) > _CROPS_KEPT:
                self.crops.popitem(last=False)
        else:
            self.crops.move_to_end(key)
        return hit


@dataclass
class DecodeTables:
    """A layout's rows as key-block lists for the device path: ``cols[h, r, :counts[h, r]]``."""

    cols: torch.Tensor  # int64 (Hl, nb, m), padded with 0
    counts: torch.Tensor  # int64 (Hl, nb)
    ones: torch.Tensor  # (1, 1, m) of ones on the device: the kernel's layout over the gathered keys
    slots: int  # m: blocks gathered per row


def build_decode_tables(lay: LayerLayout, device, causal: bool) -> DecodeTables:
    rows = lay.layout
    if causal:
        rows = rows & torch.ones(rows.shape[-2:], dtype=torch.bool).tril()
    counts = rows.sum(-1)
    m = max(1, int(counts.max()))
    cols = torch.argsort(rows.to(torch.int8), dim=-1, descending=True, stable=True)[..., :m]
    cols = torch.where(torch.arange(m) < counts[..., None], cols, 0)
    tables = DecodeTables(cols.to(device), counts.to(device), torch.ones(1, 1, m, dtype=torch.bool, device=device), m)
    if not torch.compiler.is_compiling():
        for t in (tables.cols, tables.counts, tables.ones):  # fixed addresses for CUDA graphs
            torch._dynamo.mark_static_address(t)
    return tables


def is_layout_value(x) -> bool:
    from torch.nn.attention.flex_attention import BlockMask

    from sparsecli.layouts import SparsityConfig

    return isinstance(x, (SparsityConfig, torch.Tensor, BlockMask, str, Path))


def layer_layout(spec, block, max_seq_length, what: str) -> LayerLayout:
    """Check ``spec`` (a SparsityConfig, 0/1 tensor, BlockMask or its file) and build its layout."""
    from torch.nn.attention.flex_attention import BlockMask

    from sparsecli.layouts import SparsityConfig

    if max_seq_length is not None and (isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int)
                                       or max_seq_length < 1):
        raise ValueError(f"max_seq_length must be a positive int, got {max_seq_length!r}")
    if isinstance(spec, SparsityConfig):
        if max_seq_length is None:
            raise ValueError(f"{what}: a SparsityConfig needs max_seq_length (the longest sequence, in tokens)")
        if block is not None and block != spec.block:
            raise ValueError(f"{what}: block={block} but the SparsityConfig's block is {spec.block}; drop block")
        padded = -(-max_seq_length // spec.block) * spec.block
        layout = torch.as_tensor(spec.make_layout(padded))
        return LayerLayout(_bool_layout(layout, what), spec.block, max_seq_length)
    causal_only = False
    if isinstance(spec, (str, Path)):
        spec = _read_layout_file(Path(spec), what)
    if isinstance(spec, BlockMask):
        from sparsecli.modules.flex_mask import from_block_mask

        try:
            layout, got = from_block_mask(spec, block)
        except ValueError as plain:
            try:  # partial tiles on the diagonal only: a causal mask, if its mask_mod says so
                layout, got = from_block_mask(spec, block, causal=True)
            except ValueError:
                raise ValueError(f"{what}: {plain}") from None
            _check_causal_diagonal(spec, what)
            causal_only = True
        spec, block = layout, got
    if not isinstance(spec, torch.Tensor):
        raise ValueError(f"{what} must be a SparsityConfig, a 0/1 tensor (Hq or 1, nb, nb), a BlockMask or its file, "
                         f"or a callable layer_idx -> one of these; got {type(spec).__name__}")
    if block is None:
        raise ValueError(f"{what}: a layout tensor needs block= (its block size: 16, 32, 64 or 128)")
    if isinstance(block, bool) or block not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(map(str, BLOCKS))}, got {block!r}")
    layout = _bool_layout(spec, what)
    tokens = layout.shape[-1] * block
    if max_seq_length is not None and max_seq_length > tokens:
        raise ValueError(f"{what}: max_seq_length={max_seq_length} is longer than the layout's {tokens} tokens "
                         f"({layout.shape[-1]} blocks of {block})")
    return LayerLayout(layout, block, tokens if max_seq_length is None else max_seq_length, causal_only)


def _check_causal_diagonal(block_mask, what: str) -> None:
    """The partial diagonal tiles of ``block_mask`` keep exactly key <= query (asked of its mask_mod,
    on those tiles only); anything else, or a mask_mod that cannot run (loaded from a file), is refused."""
    tile, seq = int(block_mask.BLOCK_SIZE[0]), int(block_mask.seq_lengths[0])
    num, idx = block_mask.kv_num_blocks[0].cpu(), block_mask.kv_indices[0].cpu()
    for h in range(num.shape[0]):
        for i in range(num.shape[1]):
            if i not in idx[h, i, :num[h, i]].tolist():
                continue
            pos = torch.arange(i * tile, min((i + 1) * tile, seq))
            try:
                got = block_mask.mask_mod(torch.tensor(0), torch.tensor(h), pos[:, None], pos[None, :])
            except Exception as e:  # noqa: BLE001 (a mask_mod that cannot run: loaded from a file, say)
                raise ValueError(f"{what}: the BlockMask has partial tiles on its diagonal and its mask_mod cannot "
                                 f"tell whether they are causal ({str(e).splitlines()[0][:120]}); if they are, "
                                 "register sparsecli.from_block_mask(mask, causal=True)[0] with its block") from None
            if not torch.equal(torch.as_tensor(got, dtype=torch.bool).cpu(), pos[:, None] >= pos[None, :]):
                raise ValueError(f"{what}: the BlockMask's partial tile ({i}, {i}) of head {h} is not a causal "
                                 "diagonal; its mask_mod decides per token, which a block layout cannot express")


def _read_layout_file(path: Path, what: str):
    from sparsecli.modules.flex_mask import load_block_mask
    from sparsecli.layouts.files import load_layout

    if path.suffix.lower() == ".pt" and path.is_file():
        try:
            block_mask = load_block_mask(path)
        except Exception as e:  # noqa: BLE001 (any unreadable file is one line)
            raise ValueError(f"{what}: {path}: cannot read it ({str(e).splitlines()[0][:160]})") from None
        if block_mask is not None:
            return block_mask
    return load_layout(path)


def _bool_layout(layout, what: str) -> torch.Tensor:
    lay = torch.as_tensor(layout).detach().cpu()
    if lay.dim() == 2:
        lay = lay[None]
    if lay.dim() != 3 or lay.shape[-1] != lay.shape[-2] or 0 in lay.shape:
        raise ValueError(f"{what} must be (heads, nb, nb) or (nb, nb) with nb >= 1, got shape {tuple(lay.shape)}")
    if lay.dtype != torch.bool:
        if lay.is_complex() or not bool(((lay == 0) | (lay == 1)).all()):
            raise ValueError(f"{what} must hold 0/1 block flags")
        lay = lay != 0
    if lay.shape[0] > 1 and bool((lay == lay[:1]).all()):
        lay = lay[:1]  # one layout for every head: the device path gathers per key/value head
    return lay.contiguous()
