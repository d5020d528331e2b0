"""Dense ``(Z, H, M, N)`` <-> block-sparse ``(Z, nnz, block, block)``, DeepSpeed's sparse format.

Blocks are stored in ``layout.nonzero()`` order (head, block row, block column), the order the
MatMul and Softmax kernels and :func:`block_tables` use. Plain PyTorch: no kernel needed.
"""
from __future__ import annotations

import torch

from ..lut import as_layout


def _blocked(layout, block: int, x: torch.Tensor, dims: int):
    lay = as_layout(layout)
    H, R, C = lay.shape
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dims:
        raise ValueError(f"x must be {dims}-D, got shape {tuple(x.shape)}")
    nz = lay.nonzero().to(x.device)
    return lay, H, R, C, nz


def dense_to_sparse(x: torch.Tensor, layout, block: int) -> torch.Tensor:
    """Gather the layout's blocks of dense ``x (Z, H, R*block, C*block)`` into ``(Z, nnz, block, block)``."""
    lay, H, R, C, nz = _blocked(layout, block, x, 4)
    Z = x.shape[0]
    if tuple(x.shape[1:]) != (H, R * block, C * block):
        raise ValueError(f"x must have shape (Z, {H}, {R * block}, {C * block}) for this layout, got {tuple(x.shape)}")
    blocks = x.reshape(Z, H, R, block, C, block).transpose(3, 4)  # (Z, H, R, C, b, b)
    return blocks[:, nz[:, 0], nz[:, 1], nz[:, 2]].contiguous()


def sparse_to_dense(x: torch.Tensor, layout, block: int, fill=0) -> torch.Tensor:
    """Scatter ``x (Z, nnz, block, block)`` into a dense ``(Z, H, M, N)``; absent blocks hold ``fill``."""
    lay, H, R, C, nz = _blocked(layout, block, x, 4)
    Z = x.shape[0]
    if tuple(x.shape[1:]) != (nz.shape[0], block, block):
        raise ValueError(f"x must have shape (Z, {nz.shape[0]}, {block}, {block}) for this layout, got {tuple(x.shape)}")
    out = torch.full((Z, H, R, C, block, block), fill, dtype=x.dtype, device=x.device)
    out[:, nz[:, 0], nz[:, 1], nz[:, 2]] = x
    return out.transpose(3, 4).reshape(Z, H, R * block, C * block)
