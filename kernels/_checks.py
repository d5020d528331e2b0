"""Argument checks and launch choices shared by the kernel entry points (attention, MatMul, Softmax).

Every failure is a ValueError that names the offending argument, so a user can tell which of
several tensors was wrong without reading a Triton traceback.
"""
from __future__ import annotations

import os

import torch

from .limits import BLOCKS  # noqa: F401  (the block rule lives with the head-dim rule, torch-free)

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def interpreting() -> bool:
    """True when Triton runs kernels through its CPU interpreter (TRITON_INTERPRET=1)."""
    # Triton's own truth test for this variable (getenv_bool): 1, true or on, any case.
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")


def interpreter_bf16(x: torch.Tensor) -> bool:
    """True for a CPU bf16 tensor run through Triton's interpreter, which computes bf16 ``tl.dot``
    wrongly (it multiplies the raw bits: numpy has no bf16, triton#11584).

    Every entry point (fused attention, MatMul, Softmax) then runs the same kernels in fp32 and
    rounds the result back to bf16; autograd casts the gradients back, so dtypes match.
    """
    return x.dtype == torch.bfloat16 and x.device.type != "cuda" and interpreting()


def check_block(block) -> int:
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    return int(block)


def check_tensor(x, name: str, *, device=None, dtype=None, dims=None) -> torch.Tensor:
    """Validate a kernel operand: a tensor, on a usable device, of a supported (or given) dtype."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device}, but the other operand is on {device}")
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(f"{name} must be a CUDA tensor (CPU tensors need TRITON_INTERPRET=1), got {x.device}")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name} has dtype {x.dtype}, expected {dtype}")
    if dtype is None and x.dtype not in DTYPES:
        raise ValueError(f"{name} has unsupported dtype {x.dtype}; use one of {DTYPES}")
    if dims is not None and x.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    return x


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 gets exact fp32 products (DeepSpeed's fp32 tolerance is tighter than tf32 allows)."""
    return "ieee" if dtype == torch.float32 else "tf32"


def group_size(block: int, tokens: int) -> int:
    """How many blocks of one row/column a program takes at once, so a tile spans ``tokens``."""
    return max(1, tokens // block)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()
