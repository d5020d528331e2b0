"""Figures that describe a block layout: density, row balance, causality leaks, memory, tile
efficiency and how many stacked layers it takes for information to reach every block."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

FP16_BYTES = 2
KERNEL_TILES = (64, 128)
MAX_REACH_BLOCKS = 1024  # the reachability figure costs O(nb^3 log nb) per distinct head


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

    def to_dict(self) -> dict:
        return asdict(self)


def distinct_heads(layout: torch.Tensor) -> list[tuple[int, list[int]]]:
    """[(first head, [heads with the identical layout]), ...] in head order."""
    groups: list[tuple[int, list[int]]] = []
    for h in range(layout.shape[0]):
        for first, members in groups:
            if torch.equal(layout[first], layout[h]):
                members.append(h)
                break
        else:
            groups.append((h, [h]))
    return groups


def tile_density(layout: torch.Tensor, block: int, tile: int) -> float | None:
    """Fraction of tile x tile kernel tiles holding at least one layout block (None if they don't nest)."""
    H, nb, _ = layout.shape
    if block >= tile:
        return float(layout.sum(dtype=torch.int64)) / max(1, layout.numel()) if block % tile == 0 else None
    if tile % block:
        return None
    g = tile // block
    pad = (-nb) % g
    lay = torch.nn.functional.pad(layout.bool(), (0, pad, 0, pad))
    n = (nb + pad) // g
    tiles = lay.view(H, n, g, n, g).any(dim=4).any(dim=2)
    return float(tiles.sum(dtype=torch.int64)) / max(1, tiles.numel())


def layers_to_full_reach(head: torch.Tensor, causal: bool = False) -> int | None:
    """Fewest stacked layers after which every query block depends on every key block (every key
    block at or before it when ``causal``), or None if that never happens.

    Layer k's query i sees key j when a path of at most k hops joins them in ``A | I`` (the residual
    stream keeps each position's own information), so this is the graph's diameter. Found with
    repeated squaring and a binary descent: O(nb^3 log nb).
    """
    nb = head.shape[0]
    step = (head.bool() | torch.eye(nb, dtype=torch.bool)).float()
    target = torch.ones(nb, nb, dtype=torch.bool)
    if causal:
        target = target.tril()

    def mul(a, b):
        return (a @ b > 0).float()

    def full(p):
        return bool(p.bool()[target].all())

    powers = [step]  # powers[i] = reach within 2**i layers
    while not full(powers[-1]):
        nxt = mul(powers[-1], powers[-1])
        if torch.equal(nxt, powers[-1]):
            return None
        powers.append(nxt)
    reach, layers = torch.eye(nb), 0
    for i in range(len(powers) - 2, -1, -1):  # largest layer count that is still not full
        cand = mul(reach, powers[i])
        if not full(cand):
            reach, layers = cand, layers + 2**i
    return layers + 1


def analyze(layout: torch.Tensor, block: int, kind: str = "custom", attention: str | None = None, *,
            unidirectional: bool | None = None, groups=None) -> LayoutReport:
    """Figures of ``layout``. ``unidirectional`` defaults to ``attention == "unidirectional"`` (pass
    ``config.unidirectional`` for kinds that read the string differently); ``groups`` may reuse a
    ``distinct_heads`` result."""
    H, nb, _ = layout.shape
    lay = layout.bool()
    per_row = lay.sum(-1, dtype=torch.int32)
    nnz = int(per_row.sum())
    seq = nb * block
    groups = distinct_heads(lay) if groups is None else groups
    empty = per_row == 0
    notes = []
    future = None
    if unidirectional is None:
        unidirectional = attention == "unidirectional"
    if unidirectional:
        future = int(lay.triu(1).sum())
        if future and kind in ("fixed", "variable"):
            notes.append(
                f"{future} blocks lie above the diagonal: DeepSpeed's {kind} layout lets these queries see future "
                "tokens in unidirectional mode (kept for compatibility; pass causal=True to the kernels to mask them)"
            )
        elif future:
            notes.append(f"{future} blocks lie above the diagonal: future tokens are visible to those queries")
    if int(empty.sum()):
        notes.append(f"{int(empty.sum())} (head, row) pairs have no block: those queries output zeros")

    reach, never = None, False
    if 0 < nb <= MAX_REACH_BLOCKS:
        worst = 0
        for first, _ in groups:
            k = layers_to_full_reach(lay[first], causal=unidirectional)
            if k is None:
                never = True
                break
            worst = max(worst, k)
        reach = None if never else worst
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
        blocks_per_row_mean=float(per_row.float().mean()) if nb else 0.0,
        blocks_per_row_max=int(per_row.max()) if nb else 0,
        empty_rows=int(empty.sum()),
        heads_with_empty_rows=[h for h in range(H) if bool(empty[h].any())],
        attention=attention,
        unidirectional=bool(unidirectional),
        future_blocks=future,
        scores_bytes_three_op=nnz * block * block * FP16_BYTES,
        scores_bytes_dense=H * seq * seq * FP16_BYTES,
        tile_density={t: tile_density(lay, block, t) for t in KERNEL_TILES},
        layers_to_full_reach=reach,
        full_reach_never=never,
        notes=notes,
    )
