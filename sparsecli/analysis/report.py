"""Figures that describe a block layout: density, row balance, causality leaks, memory, tile
efficiency and how many stacked layers it takes for information to reach every block."""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..kernels.limits import BLOCKS as KERNEL_BLOCKS  # the kernels' rule, without loading Triton
from .reach import reach_from_indices

FP16_BYTES = 2
KERNEL_TILES = (64, 128)
MAX_REACH_BLOCKS = 1024  # the reach figure is computed up to this many blocks a side


@dataclass
class LayoutReport:
    kind: str
    seq_len: int
    block: int
    num_blocks: int
    heads: int
    distinct_head_layouts: int
    nonzero_blocks: int
    density: float  # = dense-equivalent FLOP fraction
    density_per_head: list
    blocks_per_row_min: int
    blocks_per_row_mean: float
    blocks_per_row_max: int
    empty_rows: int  # (head, row) pairs with no block: those queries output zeros
    heads_with_empty_rows: list
    attention: str | None
    unidirectional: bool
    future_blocks: int | None  # blocks above the diagonal in a unidirectional layout
    scores_bytes_three_op: int  # per batch element, fp16, DeepSpeed's (nnz, block, block) format
    scores_bytes_dense: int  # per batch element, fp16, H x S x S
    tile_density: dict = field(default_factory=dict)  # kernel tile width -> executed-tile fraction
    layers_to_full_reach: int | None = None  # None: not computed (nb too large) ...
    full_reach_never: bool = False  # ... or True: some query block never reaches some key block
    notes: list = field(default_factory=list)
    config: dict | None = None  # every parameter the layout was built with (analyze_config)
    straddling_blocks: int | None = None  # document layouts: blocks holding tokens of two documents

    def to_dict(self) -> dict:
        return asdict(self)


def head_bool(layout, h: int) -> np.ndarray:
    """Head ``h`` as an (nb, nb) numpy bool array. NumPy, not torch, for the per-head passes: on a
    busy machine torch's two-thread elementwise kernels ran 5-8x slower than one NumPy thread."""
    return np.asarray(layout[h].numpy()) != 0


def distinct_heads(layout) -> list[tuple[int, list[int]]]:
    """[(first head, [heads with the identical layout]), ...] in head order.

    Heads are bucketed by a hash of their packed bits and compared only within a bucket, so 256
    distinct heads cost 256 hashes rather than 32,640 pairwise comparisons."""
    buckets: dict[bytes, list[tuple[int, list[int]]]] = {}
    order: list[tuple[int, list[int]]] = []
    packed = [np.packbits(head_bool(layout, h)) for h in range(layout.shape[0])]
    for h, bits in enumerate(packed):
        bucket = buckets.setdefault(hashlib.blake2b(bits.tobytes(), digest_size=16).digest(), [])
        for first, members in bucket:
            if np.array_equal(packed[first], bits):
                members.append(h)
                break
        else:
            bucket.append((h, [h]))
            order.append(bucket[-1])
    return order


def tiles_hit(head: np.ndarray, block: int, tile: int) -> tuple[int, int] | None:
    """(tiles holding at least one block, all tiles) when one (nb, nb) bool head runs on
    tile x tile kernel tiles; None if block and tile don't nest."""
    nb = head.shape[0]
    if block >= tile:
        return (int(np.count_nonzero(head)), nb * nb) if block % tile == 0 else None
    if tile % block:
        return None
    g = tile // block
    n = -(-nb // g)
    if n * g != nb:
        head = np.pad(head, ((0, n * g - nb), (0, n * g - nb)))
    if g in (2, 4, 8):  # g bools side by side read as one integer: a fast any() along the row
        cols = np.ascontiguousarray(head).view(f"u{g}") != 0  # (rows, tile columns)
    else:
        cols = head.reshape(n * g, n, g).any(axis=2)
    tiles = cols.reshape(n, g, n).any(axis=1)
    return int(np.count_nonzero(tiles)), n * n


@dataclass
class _HeadFigures:
    per_row: np.ndarray  # blocks per row
    future: int  # blocks above the diagonal
    tiles: dict  # tile width -> (hit, total) or None
    nonzero: np.ndarray | None  # flat indices i * nb + j, kept for the reach figure (small layouts only)


def _head_figures(head: np.ndarray, block: int, unidirectional: bool, keep: bool) -> _HeadFigures:
    # Allocations stay at a byte or two per block (no index arrays, 24 bytes per block of a dense
    # head, unless the reach figure needs them, which is only computed up to 1024 blocks).
    return _HeadFigures(
        per_row=np.count_nonzero(head, axis=1),
        future=int(np.count_nonzero(np.triu(head, 1))) if unidirectional else 0,
        tiles={t: tiles_hit(head, block, t) if block in KERNEL_BLOCKS else None for t in KERNEL_TILES},
        nonzero=np.flatnonzero(head) if keep else None,
    )


def _tile_density(figures: list[tuple[_HeadFigures, int]], tile: int) -> float | None:
    counts = [(f.tiles[tile], n) for f, n in figures]
    if any(c is None for c, _ in counts):
        return None
    return sum(c[0] * n for c, n in counts) / max(1, sum(c[1] * n for c, n in counts))


def analyze(layout: torch.Tensor, block: int, kind: str = "custom", attention: str | None = None, *,
            unidirectional: bool | None = None, groups=None) -> LayoutReport:
    """Figures of ``layout``. ``unidirectional`` defaults to ``attention == "unidirectional"`` (pass
    ``config.unidirectional`` for kinds that read the string differently); ``groups`` may reuse a
    ``distinct_heads`` result.

    Every figure is computed once per distinct head and weighted by its head count, one head at a
    time: no full-size copy of the layout (often most of the memory) is ever made."""
    H, nb, _ = layout.shape
    seq = nb * block
    groups = distinct_heads(layout) if groups is None else groups
    if unidirectional is None:
        unidirectional = attention == "unidirectional"
    reach_wanted = 0 < nb <= MAX_REACH_BLOCKS
    figures = [(_head_figures(head_bool(layout, first), block, unidirectional, reach_wanted), len(members))
               for first, members in groups]
    per_row = np.zeros((H, nb), dtype=np.int64)
    for (first, members), (f, _) in zip(groups, figures):
        per_row[members] = f.per_row
    nnz = int(per_row.sum())
    empty = per_row == 0
    notes = []
    future = None
    if unidirectional:
        future = sum(f.future * n for f, n in figures)
        if future and kind in ("fixed", "variable"):
            notes.append(
                f"{future} blocks lie above the diagonal: DeepSpeed's {kind} layout lets these queries see future "
                "tokens in unidirectional mode (kept for compatibility; pass causal=True to the kernels to mask them)"
            )
        elif future:
            notes.append(f"{future} blocks lie above the diagonal: future tokens are visible to those queries")
    if int(empty.sum()):
        notes.append(f"{int(empty.sum())} (head, row) pairs have no block: those queries output zeros")
    if block not in KERNEL_BLOCKS:
        notes.append(f"block {block}: the kernels take blocks of {', '.join(map(str, KERNEL_BLOCKS))} only, "
                     "so no kernel runs this layout (no executed-tile density)")

    reach, never = None, False
    if reach_wanted:
        per_group = reach_from_indices([f.nonzero for f, _ in figures], nb, causal=unidirectional)
        never = any(k is None for k in per_group)
        reach = None if never else max(per_group)
    return LayoutReport(
        kind=kind,
        seq_len=seq,
        block=block,
        num_blocks=nb,
        heads=H,
        distinct_head_layouts=len(groups),
        nonzero_blocks=nnz,
        density=nnz / max(1, H * nb * nb),
        density_per_head=[int(n) / max(1, nb * nb) for n in per_row.sum(-1)],
        blocks_per_row_min=int(per_row.min()) if nb else 0,
        blocks_per_row_mean=float(per_row.mean()) if nb else 0.0,
        blocks_per_row_max=int(per_row.max()) if nb else 0,
        empty_rows=int(empty.sum()),
        heads_with_empty_rows=[h for h in range(H) if bool(empty[h].any())],
        attention=attention,
        unidirectional=bool(unidirectional),
        future_blocks=future,
        scores_bytes_three_op=nnz * block * block * FP16_BYTES,
        scores_bytes_dense=H * seq * seq * FP16_BYTES,
        tile_density={t: _tile_density(figures, t) for t in KERNEL_TILES},
        layers_to_full_reach=reach,
        full_reach_never=never,
        notes=notes,
    )


def analyze_config(config, layout: torch.Tensor, groups=None) -> LayoutReport:
    """``analyze`` for a layout built from ``config``: named by its label, read as the config reads
    ``attention``, with every parameter used and what only the config knows (ignored indices,
    blocks straddling documents)."""
    seq_len = layout.shape[-1] * config.block
    report = analyze(layout, config.block, config.label, getattr(config, "attention", None),
                     unidirectional=config.unidirectional, groups=groups)
    report.config = {"mode": config.kind, "num_heads": config.num_heads, **config.to_dict()}
    for name, value in config.report_figures(seq_len).items():
        setattr(report, name, value)
    report.notes.extend(config.layout_notes(seq_len))
    return report
