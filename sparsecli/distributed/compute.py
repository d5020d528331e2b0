"""One part of a rank's attention: ``blocksparse_attention(..., return_lse=True)`` on CUDA (and under
Triton's interpreter), the PyTorch reference on plain CPU tensors.

On CPU, ``blocksparse_attention`` itself runs the reference forward and its row-by-row backward;
calling them here directly gives the same numbers without importing the kernels' GPU dispatch
(torch._dynamo and Triton: seconds of start-up in every gloo process). The reference backward
also takes an lse gradient where a query attends nothing (lse -inf) without producing NaN, which
autograd through ``logsumexp`` would not.
"""
from __future__ import annotations

import torch

from ..kernels._checks import interpreting


class _Reference(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, layout, block, causal, scale):
        from ..kernels.reference import blocksparse_attention_reference

        out, lse = blocksparse_attention_reference(q, k, v, layout, block, causal=causal, sm_scale=scale,
                                                   return_lse=True, compute_dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out)
        ctx.args = (layout, block, causal, scale)
        ctx.set_materialize_grads(False)
        return out.to(q.dtype), lse

    @staticmethod
    def backward(ctx, dout, dlse):
        from ..kernels.reference import reference_backward

        q, k, v, out = ctx.saved_tensors
        layout, block, causal, scale = ctx.args
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv = reference_backward(dout, dlse, q, k, v, out, layout, block, causal=causal, sm_scale=scale,
                                        compute_dtype=torch.float32)
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None


def attend(q, k, v, layout, block: int, causal: bool, scale: float | None):
    """``(out, lse)`` of q against k, v on ``layout``, differentiable in q, k, v (and through lse)."""
    if q.is_cuda or interpreting():
        from ..kernels import blocksparse_attention

        return blocksparse_attention(q, k, v, layout, block, causal=causal, sm_scale=scale, return_lse=True)
    return _Reference.apply(q, k, v, layout, block, causal, scale)
