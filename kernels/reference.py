"""Plain-PyTorch block-sparse attention: the reference for tests and the CPU path.

It expands the layout to tokens and runs dense attention, so it costs O(S^2) memory: fine for
tests and small CPU runs, never the fast path. Semantics match the Triton kernels exactly,
including the choices DeepSpeed left open: a query with nothing to attend to outputs 0.
"""
from __future__ import annotations

import torch

from .lut import as_layout
from .masks import additive_mask


def token_mask(layout: torch.Tensor, block: int, causal: bool = False, device=None) -> torch.Tensor:
    """Expand a block layout to a bool ``(H, S, S)`` token mask (True = attend)."""
    lay = as_layout(layout).to(device) if device is not None else as_layout(layout)
    keep = lay.repeat_interleave(block, 1).repeat_interleave(block, 2)
    if causal:
        S = keep.shape[-1]
        keep = keep & torch.ones(S, S, dtype=torch.bool, device=keep.device).tril()
    return keep


def blocksparse_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    layout: torch.Tensor,
    block: int,
    *,
    causal: bool = False,
    sm_scale: float | None = None,
    key_padding_mask: torch.Tensor | None = None,
    key_padding_mask_mode: str = "add",
    attn_mask: torch.Tensor | None = None,
    attn_mask_mode: str = "mul",
    rpe: torch.Tensor | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Dense-math block-sparse attention on ``(B, H, S, D)`` tensors.

    ``compute_dtype`` (default: the inputs' dtype) is what the math runs in; tests pass float64.
    The result has ``compute_dtype``. Differentiable in q, k, v.
    """
    dt = compute_dtype or q.dtype
    B, H, S, D = q.shape
    scale = D ** -0.5 if sm_scale is None else sm_scale
    qc, kc, vc = q.to(dt), k.to(dt), v.to(dt)
    scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale
    if rpe is not None:
        scores = scores + rpe.to(dt)
    if key_padding_mask is not None:
        scores = scores + additive_mask(key_padding_mask, key_padding_mask_mode, "key_padding_mask").to(dt)[:, None, None, :]
    if attn_mask is not None:
        scores = scores + additive_mask(attn_mask, attn_mask_mode, "attn_mask").to(dt)
    keep = token_mask(layout, block, causal, device=q.device)
    if keep.shape[0] == 1 and H > 1:
        keep = keep.expand(H, S, S)
    allowed = keep.unsqueeze(0) & (scores != float("-inf"))
    neg_inf = torch.tensor(float("-inf"), dtype=dt, device=q.device)
    scores = torch.where(allowed, scores, neg_inf)
    # A row with nothing allowed gets zeros (not NaN): softmax on zeros, then masked out.
    has_any = allowed.any(-1, keepdim=True)
    scores = torch.where(has_any, scores, torch.zeros((), dtype=dt, device=q.device))
    probs = torch.softmax(scores, dim=-1) * has_any
    return torch.matmul(probs, vc)
