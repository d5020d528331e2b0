"""Argument checks of ``blocksparse_attention``: every bad combination is a ValueError that starts
with the argument's name and says what to change.

Shapes, dtypes and devices only: nothing here reads a tensor's values, so ``torch.compile``
traces these checks without a graph break (the layout's 0/1 check runs with its index tables,
in the layout cache).
"""
from __future__ import annotations

import math
import numbers

import torch

from .backend import call_spec, choose
from .plan import AttnArgs
from .._checks import BLOCKS, DTYPES
from ..limits import HEAD_DIM_RULE, MAX_HEAD_DIM, takes_head_dim
from ..masks import check_mode


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def check_qkv(q, k, v):
    """(B, Hq, Hkv, Sq, Sk, D) of valid q ``(B, Hq, Sq, D)``, k and v ``(B, Hkv, Sk, D)``."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be (B, H, S, D), got shape {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            raise ValueError(f"{name} must be float16, bfloat16 or float32, got {t.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name} must have q's dtype {q.dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on q's device {q.device}, got {t.device}")
    if v.shape != k.shape:
        raise ValueError(f"v must have k's shape {tuple(k.shape)} (B, Hkv, Sk, D), got {tuple(v.shape)}")
    B, Hq, Sq, D = q.shape
    _, Hkv, Sk, Dk = k.shape
    if k.shape[0] != B:
        raise ValueError(f"k must have q's batch size {B}, got {k.shape[0]}")
    if Dk != D:
        raise ValueError(f"k head dim must equal q's ({D}), got {Dk}")
    if not takes_head_dim(D):
        fix = (f"pad q, k and v with zero columns to {max(8, _cdiv(D, 8) * 8)} and pass sm_scale={D}**-0.5"
               if D < MAX_HEAD_DIM else f"project the heads to at most {MAX_HEAD_DIM}")
        raise ValueError(f"q head dim must be {HEAD_DIM_RULE}, got {D}; {fix}")
    if Hkv < 1 or Hq % Hkv:
        raise ValueError(f"k has {Hkv} heads, which does not divide q's {Hq}: grouped-query attention needs "
                         f"Hq a multiple of Hkv (query head h reads key/value head h // (Hq // Hkv))")
    if Sq < 1 or Sk < 1 or B < 1:
        raise ValueError(f"q and k must have at least one batch element and token, got q {tuple(q.shape)} "
                         f"and k {tuple(k.shape)}")
    return B, Hq, Hkv, Sq, Sk, D


def check_layout(layout, block, Hq: int, Sq: int, Sk: int) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    if not isinstance(layout, torch.Tensor):
        raise ValueError(f"layout must be a torch.Tensor of 0/1, got {type(layout).__name__}")
    rows, cols = _cdiv(Sq, block), _cdiv(Sk, block)
    shape = tuple(layout.shape)
    ok = shape == (rows, cols) or (len(shape) == 3 and shape[0] in (1, Hq) and shape[1:] == (rows, cols))
    if not ok:
        raise ValueError(f"layout must be ({Hq} or 1, {rows}, {cols}) or ({rows}, {cols}): "
                         f"(heads, ceil(Sq/block), ceil(Sk/block)) for Sq={Sq}, Sk={Sk}, block={block}; "
                         f"got {shape}")
    return block


def check_scale(sm_scale, D: int) -> float:
    """``sm_scale`` as a Python float: any finite real scalar (Python, numpy, 0-d tensor) or None."""
    if sm_scale is None:
        return D ** -0.5
    if type(sm_scale) in (float, int):  # the common case, first (and simple for torch.compile)
        value = float(sm_scale)
    elif isinstance(sm_scale, torch.Tensor):
        if sm_scale.dim() != 0 or sm_scale.is_complex() or sm_scale.dtype == torch.bool:
            raise ValueError(f"sm_scale must be a real scalar, got a tensor of shape {tuple(sm_scale.shape)} "
                             f"and dtype {sm_scale.dtype}; pass a float or a 0-d real tensor")
        value = float(sm_scale.detach())
    elif isinstance(sm_scale, numbers.Real) and not isinstance(sm_scale, bool):
        value = float(sm_scale)  # Python and numpy ints and floats
    elif getattr(sm_scale, "ndim", None) == 0 and getattr(getattr(sm_scale, "dtype", None), "kind", "") in "fiu":
        value = float(sm_scale)  # a 0-d numpy array
    else:
        raise ValueError(f"sm_scale must be a finite real number or None, got {sm_scale!r}")
    if not math.isfinite(value):
        raise ValueError(f"sm_scale must be finite, got {value}")
    return value


def check_mask(mask, mode, name: str, shape: tuple, device) -> None:
    check_mode(mode, f"{name}_mode")
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    if mask.device != device:
        raise ValueError(f"{name} must be on q's device {device}, got {mask.device}")
    if mask.is_complex():
        raise ValueError(f"{name} must be real or bool, got {mask.dtype}")


def check_rpe(rpe, B, Hq, Sq, Sk, device) -> None:
    if rpe is None:
        return
    if not isinstance(rpe, torch.Tensor) or rpe.dim() != 4:
        raise ValueError(f"rpe must be a (B or 1, Hq or 1, Sq, Sk) tensor, got "
                         f"{getattr(rpe, 'shape', type(rpe).__name__)}")
    rb, rh, rs1, rs2 = rpe.shape
    if rb not in (1, B) or rh not in (1, Hq) or (rs1, rs2) != (Sq, Sk):
        raise ValueError(f"rpe must have shape ({B} or 1, {Hq} or 1, {Sq}, {Sk}), got {tuple(rpe.shape)}")
    if rpe.device != device:
        raise ValueError(f"rpe must be on q's device {device}, got {rpe.device}")
    if not rpe.is_floating_point():
        raise ValueError(f"rpe must be a floating tensor, got {rpe.dtype}")


def check_segment_ids(segment_ids, B, Sq, Sk, device) -> None:
    if segment_ids is None:
        return
    if not isinstance(segment_ids, torch.Tensor):
        raise ValueError(f"segment_ids must be a (B, S) integer tensor, got {type(segment_ids).__name__}")
    if Sq != Sk:
        raise ValueError(f"segment_ids needs queries and keys of one packed sequence (Sq == Sk), got Sq={Sq} "
                         f"and Sk={Sk}; drop segment_ids, or mask keys with key_padding_mask/attn_mask")
    if tuple(segment_ids.shape) != (B, Sq):
        raise ValueError(f"segment_ids must have shape (B, S) = ({B}, {Sq}), got {tuple(segment_ids.shape)}")
    if segment_ids.is_floating_point() or segment_ids.is_complex() or segment_ids.dtype == torch.bool:
        raise ValueError(f"segment_ids must be an integer tensor (int32 or int64), got {segment_ids.dtype}")
    if segment_ids.device != device:
        raise ValueError(f"segment_ids must be on q's device {device}, got {segment_ids.device}")


def check_args(q, k, v, layout, block, causal, sm_scale, key_padding_mask, key_padding_mask_mode,
               attn_mask, attn_mask_mode, rpe, segment_ids, backend="auto", deterministic=True) -> AttnArgs:
    """Validate one call (raising ValueError) and return its arguments besides q, k, v, with the
    kernels that will run it (``fused.backend.choose``)."""
    if not isinstance(deterministic, bool):
        raise ValueError(f"deterministic must be True or False, got {deterministic!r}")
    B, Hq, Hkv, Sq, Sk, D = check_qkv(q, k, v)
    check_layout(layout, block, Hq, Sq, Sk)
    scale = check_scale(sm_scale, D)
    check_mask(key_padding_mask, key_padding_mask_mode, "key_padding_mask", (B, Sk), q.device)
    check_mask(attn_mask, attn_mask_mode, "attn_mask", (Sq, Sk), q.device)
    check_rpe(rpe, B, Hq, Sq, Sk, q.device)
    check_segment_ids(segment_ids, B, Sq, Sk, q.device)
    args = AttnArgs(layout, block, bool(causal), scale, key_padding_mask, key_padding_mask_mode,
                    attn_mask, attn_mask_mode, rpe, segment_ids)
    return args._replace(backend=choose(backend, call_spec(q, k, args))[0], deterministic=deterministic)
