"""TMA (Hopper bulk copies) for the portable kernels: whether a call can use it, and the tensor
descriptors the kernels load through."""
from __future__ import annotations

import functools

import torch

from .._checks import interpreting


def _device_index(device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _has_tma(*xs: torch.Tensor) -> bool:
    """TMA loads: Hopper or later (the interpreter emulates them), every base 16-byte aligned."""
    if any(t.data_ptr() % 16 for t in xs):
        return False
    x = xs[0]
    if not x.is_cuda:
        return interpreting()
    return _capability(_device_index(x.device))[0] >= 9


@functools.lru_cache(maxsize=None)
def _capability(index: int):
    return torch.cuda.get_device_capability(index)


def _rows_descriptor(x, rows: int, head_dim: int | None = None):
    """Tensor descriptor over ``x`` (B, H, S, D) as (B*H*S, D) rows, loading ``rows`` x
    ``head_dim`` (default D; columns past D read as zeros) at a time.

    Building and validating a TensorDescriptor on every call was the largest share of our host
    time per fwd+bwd (11 of them), so one validated template per geometry is copied and pointed
    at ``x`` (its alignment is checked by ``_has_tma``).
    """
    D = x.shape[-1]
    template = _descriptor_template(x.numel() // D, D, x.dtype, rows, head_dim or D)
    desc = object.__new__(type(template))
    desc.__dict__.update(template.__dict__, base=x)
    return desc


@functools.lru_cache(maxsize=256)
def _descriptor_template(n_rows: int, head_dim: int, dtype: torch.dtype, rows: int, tile_dim: int):
    from triton.tools.tensor_descriptor import TensorDescriptor

    return TensorDescriptor(torch.empty(0, dtype=dtype), [n_rows, head_dim], [head_dim, 1], [rows, tile_dim])
