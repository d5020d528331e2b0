"""The ops behind ``SparseSelfAttention``: one callable per (layout crop, backend, device).

Every op takes ``(q, k, v)`` plus the masks in DeepSpeed's conventions and returns the attention
output in q's dtype. CUDA tensors (or any tensor under ``TRITON_INTERPRET=1``) run the Triton
kernels of the chosen backend; other CPU tensors get the fused op, whose
``blocksparse_attention`` runs the plain PyTorch reference there, whichever backend was asked for.
"""
from __future__ import annotations

import torch

from ..kernels._checks import interpreting
from ..kernels.masks import additive_mask

BACKENDS = ("fused", "three_op")


class _LayoutOp:
    def __init__(self, layout, block):
        self.layout, self.block = layout, block


class _FusedOp(_LayoutOp):
    """The fused flash kernel (``sparsecli.kernels.blocksparse_attention``); on CPU tensors without
    the Triton interpreter that function itself runs the PyTorch reference (fp32 math)."""

    def __call__(self, q, k, v, *, causal, kpm=None, kpm_mode="add", am=None, am_mode="mul", rpe=None,
                 sm_scale=None):
        from ..kernels import blocksparse_attention

        return blocksparse_attention(
            q, k, v, self.layout, self.block, causal=causal, sm_scale=sm_scale,
            key_padding_mask=kpm, key_padding_mask_mode=kpm_mode,
            attn_mask=am, attn_mask_mode=am_mode, rpe=rpe)


class _ThreeOp:
    """DeepSpeed's path: scores = sdd(q, k^T), probs = softmax(scores, masks), out = dsd(probs, v).

    The one implementation of it: ``SparseSelfAttention(backend="three_op")`` and the bench's
    ``three-op`` provider both call this. ``layout`` may live on the CPU or the device.
    """

    def __init__(self, layout, block):
        from ..kernels import MatMul, Softmax

        self.sdd = MatMul(layout, block, "sdd", trans_a=False, trans_b=True)
        self.dsd = MatMul(layout, block, "dsd")
        self.softmax = Softmax(layout, block)
        self._causal_mask = None  # ((L, device), the (L, L) fp32 additive mask): built once, not per call

    def causal_mask(self, L: int, device) -> torch.Tensor:
        """The additive ``(L, L)`` fp32 mask dropping every later key (0 on/below the diagonal, -inf above)."""
        key = (L, torch.device(device))
        if self._causal_mask is None or self._causal_mask[0] != key:
            mask = torch.zeros(L, L, device=device).masked_fill_(
                torch.ones(L, L, dtype=torch.bool, device=device).triu_(1), float("-inf"))
            self._causal_mask = (key, mask)
        return self._causal_mask[1]

    def __call__(self, q, k, v, *, causal, kpm=None, kpm_mode="add", am=None, am_mode="mul", rpe=None,
                 sm_scale=None):
        if causal:  # the softmax op has no causal flag: drop every later key through attn_mask
            future = self.causal_mask(q.shape[2], q.device)
            if am is None:
                am = future
            else:
                am = additive_mask(am, am_mode, "attn_mask").masked_fill(torch.isneginf(future), float("-inf"))
            am_mode = "add"
        scores = self.sdd(q, k)
        scale = q.shape[-1] ** -0.5 if sm_scale is None else sm_scale
        probs = self.softmax(scores, scale=scale, rpe=rpe, key_padding_mask=kpm, attn_mask=am,
                             key_padding_mask_mode=kpm_mode, attn_mask_mode=am_mode)
        return self.dsd(probs, v)


def make_op(backend: str, layout: torch.Tensor, block: int, device: torch.device):
    """The op computing attention on ``layout`` (CPU ``(H, nb, nb)``) for tensors on ``device``."""
    if backend == "three_op" and (device.type == "cuda" or interpreting()):
        return _ThreeOp(layout, block)
    # The fused op also covers CPU tensors without the interpreter: blocksparse_attention runs
    # the PyTorch reference there, whichever backend was asked for.
    return _FusedOp(layout, block)
