"""``blocksparse_attention`` as ``torch.library`` custom ops, for ``torch.compile``.

Under ``torch.compile`` the public function calls ``sparsecli::blocksparse_attention_fwd``
(``_bwd`` through the registered autograd): opaque to the compiler, with fake implementations
giving the output shapes, so ``fullgraph=True`` compiles a model's forward and backward around
it with no graph break. Inside the ops everything is what an eager call does (layout cache,
plans, launches), so the compiled graph and eager mode run the same kernels. Eager calls skip
the dispatcher (``kernels/attention.py``): its overhead per call is several times our launches'.

No ``from __future__ import annotations`` here: ``custom_op`` reads the signature's types.
"""
from typing import Optional

import torch
from torch import Tensor

from .call import run_backward, run_forward
from .plan import AttnArgs


@torch.library.custom_op("sparsecli::blocksparse_attention_fwd", mutates_args=())
def attention_fwd(q: Tensor, k: Tensor, v: Tensor, layout: Tensor, block: int, causal: bool, sm_scale: float,
                  key_padding_mask: Optional[Tensor], key_padding_mask_mode: str, attn_mask: Optional[Tensor],
                  attn_mask_mode: str, rpe: Optional[Tensor], segment_ids: Optional[Tensor],
                  backend: str, deterministic: bool) -> tuple[Tensor, Tensor]:
    """(out, lse): lse in the kernels' log2 convention (+inf for a query attending nothing).
    ``backend``: the kernels chosen when the call was traced ("triton" or "hopper");
    ``deterministic``: the backward's (``AttnArgs``)."""
    args = AttnArgs(layout, block, causal, sm_scale, key_padding_mask, key_padding_mask_mode, attn_mask,
                    attn_mask_mode, rpe, segment_ids, backend, deterministic)
    out, lse, _ = run_forward(args, q, k, v)
    return out, lse


@attention_fwd.register_fake
def _(q, k, v, *args):
    return q.new_empty(q.shape), q.new_empty(q.shape[:3], dtype=torch.float32)


@torch.library.custom_op("sparsecli::blocksparse_attention_bwd", mutates_args=())
def attention_bwd(dout: Tensor, dlse: Optional[Tensor], q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                  layout: Tensor, block: int, causal: bool, sm_scale: float, key_padding_mask: Optional[Tensor],
                  key_padding_mask_mode: str, attn_mask: Optional[Tensor], attn_mask_mode: str,
                  rpe: Optional[Tensor], segment_ids: Optional[Tensor],
                  backend: str, deterministic: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dq, dk, dv); ``dlse`` is the gradient of the log2 lse output (None: unused)."""
    args = AttnArgs(layout, block, causal, sm_scale, key_padding_mask, key_padding_mask_mode, attn_mask,
                    attn_mask_mode, rpe, segment_ids, backend, deterministic)
    return run_backward(args, None, q, k, v, out, lse, dout, dlse)


@attention_bwd.register_fake
def _(dout, dlse, q, k, v, *args):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)



def _setup_context(ctx, inputs, output):
    q, k, v, layout, block, causal, sm_scale, kpm, kpm_mode, am, am_mode, rpe, ids, backend, det = inputs
    ctx.save_for_backward(q, k, v, output[0], output[1], layout, kpm, am, rpe, ids)
    ctx.scalars = (block, causal, sm_scale, kpm_mode, am_mode, backend, det)
    # An unused lse keeps a None gradient (as in eager): materialised, the compiled backward
    # filled a (B, H, Sq) zeros tensor, scaled it and read it in the dQ kernel on every step.
    ctx.set_materialize_grads(False)


def _backward(ctx, dout, dlse):
    q, k, v, out, lse, layout, kpm, am, rpe, ids = ctx.saved_tensors
    block, causal, sm_scale, kpm_mode, am_mode, backend, det = ctx.scalars
    if dout is None:
        dout = torch.zeros_like(out)
    dq, dk, dv = attention_bwd(dout, dlse, q, k, v, out, lse, layout, block, causal, sm_scale, kpm, kpm_mode,
                               am, am_mode, rpe, ids, backend, det)
    return (dq, dk, dv) + (None,) * 12


attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def call(q, k, v, args: AttnArgs):
    """(out, log2 lse) through the custom op (what a compiled graph records)."""
    return attention_fwd(q, k, v, args.layout, args.block, args.causal, args.sm_scale, args.key_padding_mask,
                         args.key_padding_mask_mode, args.attn_mask, args.attn_mask_mode, args.rpe,
                         args.segment_ids, args.backend, args.deterministic)
