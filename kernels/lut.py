"""Layout -> index tables, shared by every kernel (fused attention and the three-op path).

A layout is ``(H, R, C)`` of 0/1 (a 2-D layout counts as one head). Its non-zero blocks are
numbered in ``layout.nonzero()`` order — (head, row, col) lexicographic — which is DeepSpeed's
sparse-tensor block order, so block ``i`` of a ``(Z, nnz, b, b)`` tensor is table entry ``i``.

Tables are built once per (layout object, version, device) and cached: building them walks the
whole layout, which is far too slow to repeat on every call at long sequence lengths.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass

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
    """Validate a 2-D or 3-D 0/1 layout and return it as a 3-D CPU bool tensor."""
    if not isinstance(layout, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of 0/1, got {type(layout).__name__}")
    if layout.dim() == 2:
        layout = layout.unsqueeze(0)
    if layout.dim() != 3:
        raise ValueError(f"{name} must be 2-D (R, C) or 3-D (H, R, C), got shape {tuple(layout.shape)}")
    layout = layout.detach().cpu()
    if layout.dtype != torch.bool:
        if layout.is_floating_point() or layout.is_complex():
            bad = ((layout != 0) & (layout != 1)).any()
        else:
            bad = ((layout != 0) & (layout != 1)).any()
        if bool(bad):
            raise ValueError(f"{name} must hold only 0 and 1")
        layout = layout != 0
    return layout


def _build(layout: torch.Tensor, device: torch.device) -> BlockTables:
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


_CACHE: OrderedDict = OrderedDict()
_CACHE_SIZE = 64


def cached_per_layout(layout: torch.Tensor, key: tuple, build):
    """``build()``, cached per (layout object, in-place version, ``key``).

    The key holds the tensor's identity plus its in-place version counter, so mutating the layout
    invalidates the entry; a weak reference guards against a recycled ``id``.
    """
    full_key = (id(layout), getattr(layout, "_version", 0), tuple(layout.shape)) + tuple(key)
    hit = _CACHE.get(full_key)
    if hit is not None and hit[0]() is layout:
        _CACHE.move_to_end(full_key)
        return hit[1]
    value = build()
    try:
        ref = weakref.ref(layout)
    except TypeError:  # not weak-referenceable: do not cache
        return value
    _CACHE[full_key] = (ref, value)
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def block_tables(layout: torch.Tensor, device=None) -> BlockTables:
    """Index tables of ``layout`` on ``device``, cached per layout object and version."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    return cached_per_layout(layout, (str(device),), lambda: _build(as_layout(layout), device))


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
