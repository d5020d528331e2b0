"""Which calls the Hopper kernels take, and why not: no Triton or Gluon import until a GPU asks.

``supports(spec)`` answers for a ``fused.backend.CallSpec`` (a call described by its shapes,
dtype, device capability and optional arguments), so the dispatch, ``sparsecli info`` and the
tests (with a made-up capability) ask the same question.
"""
from __future__ import annotations

import torch

from . import variants as V

BLOCK = 128  # the only layout block the Hopper kernels take (one layout block = one tile)
TILE = 128  # query and key lengths must be multiples of it: no tile crosses a head's rows
DTYPES = (torch.float16, torch.bfloat16)
CALLS = (f"block {BLOCK}, fp16/bf16, head dim {' or '.join(map(str, V.HEAD_DIMS))}, Sq and Sk multiples of "
         f"{TILE}, causal, GQA/MQA, return_lse; no masks, rpe or segment_ids")


def device_support(capability) -> tuple[bool, str]:
    """``(True, "")`` if a GPU of ``capability`` (major, minor) can run the Hopper kernels with
    this triton, else ``(False, reason)``."""
    if capability is None:
        return False, "no CUDA GPU"
    major, minor = capability
    if major != 9:
        return False, f"GPU is sm{major}{minor}; the Hopper kernels need sm90 (H100/H200)"
    err = gluon_import_error()
    if err:
        return False, f"triton has no Gluon Hopper support ({err})"
    return True, ""


def gluon_available() -> bool:
    """Triton ships Gluon's Hopper modules (3.6 and later)."""
    return not gluon_import_error()


_IMPORT_ERROR: list = []


@torch.compiler.assume_constant_result
def gluon_import_error() -> str:
    """"" if the Gluon kernels import, else the error (checked once per process)."""
    if not _IMPORT_ERROR:
        try:
            from . import _bwd, _fwd  # noqa: F401
            _IMPORT_ERROR.append("")
        except Exception as e:  # an older or newer triton without these modules
            _IMPORT_ERROR.append(f"{type(e).__name__}: {e}")
    return _IMPORT_ERROR[0]


def supports(spec) -> str:
    """"" if the Hopper kernels compute this call, else the reason (one clause, no period)."""
    ok, why = device_support(spec.capability)
    if not ok:
        return why
    if spec.dtype not in DTYPES:
        return f"dtype {spec.dtype} (the Hopper kernels take float16/bfloat16)"
    if spec.head_dim not in V.HEAD_DIMS:
        return f"head dim {spec.head_dim} (the Hopper kernels take {' or '.join(map(str, V.HEAD_DIMS))})"
    if spec.block != BLOCK:
        return f"layout block {spec.block} (the Hopper kernels take block {BLOCK})"
    if spec.q_len % TILE or spec.k_len % TILE:
        return (f"Sq={spec.q_len}, Sk={spec.k_len} (the Hopper kernels take multiples of {TILE}; "
                "shorter tiles, decode steps included, run on the Triton kernels)")
    if spec.masks:
        return "key_padding_mask/attn_mask/rpe (the Hopper kernels take none)"
    if spec.segments:
        return "segment_ids (the Hopper kernels take none; the Triton kernels skip other documents' tiles)"
    if not spec.sm_scale > 0:
        return f"sm_scale={spec.sm_scale} (the Hopper kernels fold a positive scale into the row max)"
    return ""
