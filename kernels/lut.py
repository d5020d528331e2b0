"""Layout -> index tables, built here for every kernel (fused attention and the three-op path).

Two views of one layout: ``block_tables`` (CSR row lists / CSC column lists of the layout's
blocks, DeepSpeed's sparse-tensor order; the three-op MatMul/Softmax) and ``tile_schedule``
(the same rows and columns grouped into the fused kernel's gathered 64/128-wide tiles).

A layout is ``(H, R, C)`` of 0/1 (a 2-D layout counts as one head). Its non-zero blocks are
numbered in ``layout.nonzero()`` order — (head, row, col) lexicographic — which is DeepSpeed's
sparse-tensor block order, so block ``i`` of a ``(Z, nnz, b, b)`` tensor is table entry ``i``.

Tables are built once per (layout object, version, device) and cached: building them walks the
whole layout, which is far too slow to repeat on every call at long sequence lengths.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True)
class BlockTables:
    """CSR (per query row) and CSC (per key column) index lists of a block layout."""

    num_heads: int
    num_rows: int
    num_cols: int
    nnz: int
    row_ptr: torch.Tensor  # int32 (H*R + 1): entries of (h, r) are row_ptr[h*R+r] : row_ptr[h*R+r+1]
    col_idx: torch.Tensor  # int32 (nnz): column of each block, CSR = nonzero() order
    col_ptr: torch.Tensor  # int32 (H*C + 1): entries of (h, c) in the CSC lists
    row_idx: torch.Tensor  # int32 (nnz): row of each CSC entry
    csc_to_csr: torch.Tensor  # int32 (nnz): position in nonzero() order of each CSC entry
    max_row_nnz: int
    max_col_nnz: int


def as_layout(layout, name: str = "layout") -> torch.Tensor:
    """Validate a 2-D or 3-D 0/1 layout and return it as a 3-D CPU bool tensor.

    A 3-D CPU bool tensor comes back as the same object; any other layout is converted once per
    object (and in-place version), so ops built on one layout (MatMul sdd and dsd, Softmax) share
    one converted tensor and, through it, one set of cached index tables.
    """
    if not isinstance(layout, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of 0/1, got {type(layout).__name__}")
    if layout.dim() not in (2, 3):
        raise ValueError(f"{name} must be 2-D (R, C) or 3-D (H, R, C), got shape {tuple(layout.shape)}")
    if layout.dim() == 3 and layout.dtype == torch.bool and layout.device.type == "cpu":
        return layout
    return cached_per_layout(layout, ("as_layout",), lambda: _convert_layout(layout, name))


def _convert_layout(layout: torch.Tensor, name: str) -> torch.Tensor:
    # detach() first: the result must not hold the caller's tensor (a view's base would keep it
    # alive, and with it this cache entry).
    layout = layout.detach().cpu()
    if layout.dim() == 2:
        layout = layout.unsqueeze(0)
    if layout.dtype != torch.bool:
        if bool(((layout != 0) & (layout != 1)).any()):
            raise ValueError(f"{name} must hold only 0 and 1")
        layout = layout != 0
    return layout


def _build_tables(layout: torch.Tensor, device: torch.device) -> BlockTables:
    H, R, C = layout.shape
    flat = layout.reshape(H * R, C)
    row_counts = flat.sum(1, dtype=torch.int64)
    row_ptr = torch.zeros(H * R + 1, dtype=torch.int64)
    torch.cumsum(row_counts, 0, out=row_ptr[1:])
    nz = layout.nonzero()  # (nnz, 3) in (h, r, c) order
    nnz = nz.shape[0]
    col_idx = nz[:, 2]

    # CSC: the same blocks sorted by (head, col, row); stable sort keeps rows ascending.
    csc_key = nz[:, 0] * C + nz[:, 2]
    order = torch.sort(csc_key, stable=True).indices
    col_counts = torch.bincount(csc_key, minlength=H * C)
    col_ptr = torch.zeros(H * C + 1, dtype=torch.int64)
    torch.cumsum(col_counts, 0, out=col_ptr[1:])
    row_idx = nz[order, 1]

    def dev(t):
        return t.to(device=device, dtype=torch.int32).contiguous()

    return BlockTables(
        num_heads=H,
        num_rows=R,
        num_cols=C,
        nnz=nnz,
        row_ptr=dev(row_ptr),
        col_idx=dev(col_idx),
        col_ptr=dev(col_ptr),
        row_idx=dev(row_idx),
        csc_to_csr=dev(order),
        max_row_nnz=int(row_counts.max()) if row_counts.numel() else 0,
        max_col_nnz=int(col_counts.max()) if col_counts.numel() else 0,
    )


# id(layout) -> (weak reference, stamp, {key: value}). An entry lives exactly as long as its
# layout: a finalizer removes it when the layout is freed, so there is no global cap (a model of
# many layers, each with its own layout and a few entries, never evicts its own schedules).
_STORE: dict = {}


def _forget(layout_id: int, ref) -> None:
    entry = _STORE.get(layout_id)
    if entry is not None and entry[0] is ref:  # not a newer object that reuses the id
        del _STORE[layout_id]


def cached_per_layout(layout: torch.Tensor, key: tuple, build):
    """``build()``, cached per (layout object, in-place version, ``key``).

    Values are stored with the layout object and freed with it. An in-place edit of the layout
    (its version counter, or its shape, changes) drops every value cached for it. A weak
    reference guards against a recycled ``id``; layouts that cannot be weakly referenced are
    not cached.
    """
    layout_id = id(layout)
    stamp = (getattr(layout, "_version", 0), tuple(layout.shape))
    entry = _STORE.get(layout_id)
    if entry is not None and entry[0]() is layout:
        if entry[1] == stamp:
            values = entry[2]
            if key in values:
                return values[key]
        else:  # edited in place: everything built from the old contents is stale
            values = {}
            _STORE[layout_id] = (entry[0], stamp, values)
    else:
        try:
            ref = weakref.ref(layout)
        except TypeError:  # not weak-referenceable: do not cache
            return build()
        values = {}
        _STORE[layout_id] = (ref, stamp, values)
        weakref.finalize(layout, _forget, layout_id, ref).atexit = False
    value = build()
    values[key] = value
    return value


def block_tables(layout: torch.Tensor, device=None) -> BlockTables:
    """Index tables of ``layout`` on ``device``, cached per layout object and version."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    if device.type == "cpu":
        return cached_per_layout(layout, (str(device),), lambda: _build_tables(as_layout(layout), device))
    # Other devices get a copy of the CPU tables: the layout is walked once, whatever the device.
    return cached_per_layout(layout, (str(device),), lambda: _tables_to(block_tables(layout), device))


def _tables_to(t: BlockTables, device: torch.device) -> BlockTables:
    return replace(t, **{f.name: getattr(t, f.name).to(device) for f in fields(t)
                         if isinstance(getattr(t, f.name), torch.Tensor)})


def list_chunks(ptr: torch.Tensor, group: int) -> torch.Tensor:
    """Split every list of a CSR/CSC pointer array into runs of at most ``group`` entries.

    Returns int32 ``(n, 2)``: [list index, first entry] per run, on ``ptr``'s device; a run ends
    at ``min(first + group, ptr[list + 1])``. Kernels that give one program a few blocks of one
    row (small blocks grouped into one tile) launch one program per run.
    """
    p = ptr.to(torch.int64)
    counts = p[1:] - p[:-1]
    runs = (counts + group - 1) // group
    lists = torch.repeat_interleave(torch.arange(counts.numel(), device=p.device), runs)
    first_run = torch.cumsum(runs, 0) - runs
    within = torch.arange(lists.numel(), device=p.device) - first_run[lists]
    first = p[lists] + within * group
    return torch.stack([lists, first], 1).to(torch.int32).contiguous()

# ==============================================================================================
# Tile schedules of the fused attention kernels (forward, dQ and dK/dV).
#
# Every kernel program owns one *outer* tile of ``outer`` contiguous tokens (queries in the forward
# and dQ kernels, keys in dK/dV) and walks a list of *inner* tiles of ``inner`` tokens gathered from
# the layout's non-zero blocks on the other side. Small layout blocks are what this is for: with
# block 16 a 128x64 tile groups 8 query row-blocks and gathers 4 key blocks that need not be
# adjacent (their token rows are addressed through ``seg_start``), and a bit per (row-block, key
# block) pair says which of the 32 sub-blocks the layout really holds. Tiles whose bits are all set
# (and, when causal, lie wholly on or below the diagonal, and hold no token past the end of the
# sequence) come first in each list and run without any masking; the rest are masked element by
# element.
#
# Query and key lengths may differ and need not be multiples of the block (the layout is
# ``ceil(Sq/block) x ceil(Sk/block)``; causal is bottom-right aligned: query i sees key j <= i + Sk - Sq).
# With grouped-query attention the dK/dV lists of a key/value head are its query heads' lists one
# after the other, their inner tokens numbered ``g * Sq + token`` for the group's g-th query head.
#
# Programs are listed heaviest-first so that BigBird/Longformer global rows, which visit every key
# block, start at once instead of trailing behind a launch of light rows; in the forward, rows
# longer than a cap are also split over several programs (merged by a small combine kernel).
#
# Everything here is O(layout): a few int32 entries per non-zero block, no per-token buffer.
# ==============================================================================================

MAX_TILE_BITS = 64  # sub-block bits of a tile live in one int64
MIN_TILE = 16  # tl.dot's smallest operand side


@dataclass(frozen=True)
class TileSchedule:
    """Gathered tiles of one direction of a layout, for ``outer x inner`` token tiles."""

    outer: int  # tokens per outer tile (contiguous)
    inner: int  # tokens per inner tile (gathered)
    unit: int  # outer tokens per bit row: min(block, outer)
    seg: int  # inner tokens per gathered segment: min(block, inner)
    nseg: int  # segments per inner tile
    num_outer: int  # outer tiles per head
    seg_start: torch.Tensor  # int32 (T*nseg): first inner token of each segment
    tile_bits: torch.Tensor  # int64 (T): bit g*nseg+s set = outer unit g sees segment s
    # int32 (P, 5) per program, heaviest first: h*num_outer + o, first tile, first masked tile,
    # end tile, partial-result slot (-1: the program owns its whole row and writes the output).
    programs: torch.Tensor
    num_programs: int
    combine: torch.Tensor  # int32 (R, 3): split row, its first slot, its number of slots
    num_split_rows: int
    num_slots: int
    total_tiles: int  # tiles walked by all programs of one batch element (every head)
    num_tiles: int
    max_tiles: int  # longest list (the critical path of a launch)
    # Per table row (rows of distinct layout heads x num_outer): its tiles start at
    # row_ptr[r] (int32, R+1) and the first row_full[r] of them are full (int32, R).
    row_ptr: torch.Tensor = None
    row_full: torch.Tensor = None
    num_rows: int = 0


def tile_size(seq_len: int, want: int) -> int:
    """Tile side for a sequence: ``want`` (a power of two), or the smallest power of two >= 16 that
    covers a shorter sequence (a 1-token decode step gets 16-row tiles, not 128)."""
    return max(MIN_TILE, min(want, 1 << max(0, seq_len - 1).bit_length()))


def causal_blocks(rows: int, cols: int, block: int, q_len: int, k_len: int) -> torch.Tensor:
    """(rows, cols) bool: block pairs holding at least one (query, key) pair that bottom-right causal
    attention keeps (key j <= query i + k_len - q_len)."""
    last_q = torch.clamp(torch.arange(1, rows + 1) * block, max=q_len) - 1
    return torch.arange(cols)[None, :] * block <= (last_q + k_len - q_len)[:, None]


def _build_schedule(lay: torch.Tensor, block: int, outer: int, inner: int, causal: bool,
                    transpose: bool, num_heads: int, split: int, device, q_len: int, k_len: int,
                    group: int) -> TileSchedule:
    if lay.shape[0] > 1 and bool((lay == lay[:1]).all()):
        lay = lay[:1]  # identical heads (most DeepSpeed configs): one shared table
    Hl, R, C = lay.shape
    if causal:  # blocks holding only future keys: dropped before tiling
        lay = lay & causal_blocks(R, C, block, q_len, k_len)
    n_out, n_in = (k_len, q_len) if transpose else (q_len, k_len)
    if transpose:
        lay = lay.transpose(1, 2)
        if group > 1 and Hl == 1:  # every query head of a group walks the shared list
            lay = lay.expand(group, -1, -1)
    # dK/dV of grouped heads: rows of table head h // group, inner tokens offset (h % group) * Sq.
    grouped = transpose and group > 1
    Hh = lay.shape[0]
    Ht = Hh // group if grouped else Hh
    unit, seg = min(block, outer), min(block, inner)
    G, nseg = outer // unit, inner // seg
    if G * nseg > MAX_TILE_BITS:
        raise ValueError(f"tile {outer}x{inner} at block {block} needs {G * nseg} mask bits (> 64)")
    lu = lay.repeat_interleave(block // unit, 1).repeat_interleave(block // seg, 2)
    # Units and segments that start past the end of their sequence hold no token.
    n_units, n_segs = -(-n_out // unit), -(-n_in // seg)
    num_outer = -(-n_units // G)
    lu = lu[:, :n_units, :n_segs]
    if num_outer * G > n_units:
        lu = torch.cat([lu, lu.new_zeros(Hh, num_outer * G - n_units, n_segs)], 1)
    grp = lu.reshape(Hh, num_outer, G, n_segs)
    union = grp.any(2)  # inner segments any row of the outer tile needs
    counts = union.sum(-1).flatten()
    ntiles = (counts + nseg - 1) // nseg
    first_tile = torch.cumsum(ntiles, 0) - ntiles
    entry_ptr = torch.cumsum(counts, 0) - counts
    T = int(ntiles.sum())

    nz = union.nonzero()  # (N, 3) in (head, outer, segment) order
    row = nz[:, 0] * num_outer + nz[:, 1]
    local = torch.arange(nz.shape[0]) - entry_ptr[row]
    tile = first_tile[row] + local // nseg
    slot = local % nseg
    seg_start = torch.full((T, nseg), -1, dtype=torch.int64)
    seg_start[tile, slot] = nz[:, 2] * seg
    # Padding slots repeat slot 0 (always present): valid addresses, masked off by zero bits.
    seg_start = torch.where(seg_start < 0, seg_start[:, :1], seg_start)

    seen = grp[nz[:, 0], nz[:, 1], :, nz[:, 2]].long()  # (N, G)
    shift = torch.arange(G)[None, :] * nseg + slot[:, None]
    # Distinct bits, so a wrapping int64 sum is a bitwise or (bit 63 included).
    bits = torch.zeros(T, dtype=torch.int64).index_add_(0, tile, (seen << shift).sum(1))
    all_bits = -1 if G * nseg == 64 else (1 << (G * nseg)) - 1
    # Full: every sub-block present, and no segment running past the end of the sequence.
    full = (bits == all_bits) & (seg_start.max(1).values + seg <= n_in)
    row_of_tile = torch.repeat_interleave(torch.arange(Hh * num_outer), ntiles)
    if causal and T:
        o_start = (row_of_tile % num_outer) * outer
        if transpose:  # outer = keys: full when every query sees the outer tile's last key
            last_key = torch.clamp(o_start + outer, max=k_len) - 1
            full &= seg_start.min(1).values + k_len - q_len >= last_key
        else:  # outer = queries: full when the first query sees every key
            full &= seg_start.max(1).values + seg - 1 <= o_start + k_len - q_len
    if grouped:
        seg_start = seg_start + ((row_of_tile // num_outer) % group * q_len)[:, None]
        head = row_of_tile // num_outer
        row_of_tile = head // group * num_outer + row_of_tile % num_outer
        ntiles = torch.bincount(row_of_tile, minlength=Ht * num_outer)
    tile_ptr = torch.zeros(Ht * num_outer + 1, dtype=torch.int64)
    torch.cumsum(ntiles, 0, out=tile_ptr[1:])
    num_full = torch.zeros(Ht * num_outer, dtype=torch.int64).index_add_(0, row_of_tile, full.long())
    perm = torch.sort(row_of_tile * 2 + (~full).long(), stable=True).indices
    seg_start, bits = seg_start[perm], bits[perm]

    progs, combine, num_slots, total = _programs(tile_ptr, num_full, ntiles, Ht, num_outer, num_heads, split)

    def dev(t, dtype=torch.int32):
        if t.numel() == 0:  # kernels index nothing, but want a real pointer
            t = torch.zeros(1, dtype=t.dtype)
        return t.to(device=device, dtype=dtype).contiguous()

    return TileSchedule(
        outer=outer, inner=inner, unit=unit, seg=seg, nseg=nseg, num_outer=num_outer,
        seg_start=dev(seg_start.flatten()), tile_bits=dev(bits, torch.int64),
        programs=dev(progs), num_programs=progs.shape[0], combine=dev(combine),
        num_split_rows=combine.shape[0], num_slots=num_slots, total_tiles=total,
        num_tiles=T, max_tiles=int(ntiles.max()) if ntiles.numel() else 0,
        row_ptr=dev(tile_ptr), row_full=dev(num_full), num_rows=Ht * num_outer,
    )


def _programs(tile_ptr, num_full, ntiles, Hl, num_outer, num_heads, split):
    """Program table, heaviest first: rows longer than ``split`` tiles become several programs."""
    rows = torch.arange(num_heads * num_outer)
    table_row = rows if Hl > 1 else rows % num_outer
    work = ntiles[table_row]
    nchunks = ((work + split - 1) // split).clamp_min(1)
    prog_row = torch.repeat_interleave(rows, nchunks)
    first = torch.cumsum(nchunks, 0) - nchunks
    chunk = torch.arange(prog_row.numel()) - first[prog_row]
    tr = table_row[prog_row]
    tb = tile_ptr[tr] + chunk * split
    te = torch.minimum(tb + split, tile_ptr[tr + 1])
    tf = torch.minimum(torch.maximum(tile_ptr[tr] + num_full[tr], tb), te)
    is_split = nchunks[prog_row] > 1
    slot = torch.where(is_split, torch.cumsum(is_split.long(), 0) - 1, torch.full_like(tb, -1))
    progs = torch.stack([prog_row, tb, tf, te, slot], 1)
    progs = progs[torch.sort(-(te - tb), stable=True).indices]
    split_rows = (nchunks > 1).nonzero().flatten()
    # Slots of a split row are consecutive: (row, first slot, number of slots).
    first_slot = torch.cumsum(torch.where(nchunks > 1, nchunks, 0), 0) - torch.where(nchunks > 1, nchunks, 0)
    combine = torch.stack([split_rows, first_slot[split_rows], nchunks[split_rows]], 1)
    return progs, combine, int(is_split.sum()), int(work.sum())


def tile_schedule(layout: torch.Tensor, block: int, outer: int, inner: int, *, causal: bool,
                  transpose: bool, num_heads: int, split: int | None = None, device=None,
                  seq_lens: tuple[int, int] | None = None, group: int = 1) -> TileSchedule:
    """Tile schedule of ``layout`` (cached per layout object, version and arguments).

    ``transpose=False`` tiles query rows (forward, dQ); ``True`` tiles key columns (dK/dV).
    ``num_heads``: heads of the outer side (query heads, or key/value heads with ``transpose``).
    ``split``: the most tiles one program walks; longer rows are split into several programs
    whose partial softmax states a combine step merges (None: never split).
    ``seq_lens``: (Sq, Sk), default the layout's full extent. ``group``: query heads per key/value
    head; with ``transpose`` a key tile's list then covers every query head of its group.
    """
    split = split or 2**31 - 1
    device = torch.device(device) if device is not None else torch.device("cpu")
    q_len, k_len = seq_lens or (layout.shape[-2] * block, layout.shape[-1] * block)
    key = ("tiles", block, outer, inner, causal, transpose, num_heads, split, str(device), q_len, k_len, group)
    return cached_per_layout(
        layout, key,
        lambda: _build_schedule(as_layout(layout), block, outer, inner, causal, transpose, num_heads, split,
                                device, q_len, k_len, group))
