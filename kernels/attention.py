"""Fused block-sparse flash attention (forward + backward) with DeepSpeed mask semantics.

``blocksparse_attention`` computes softmax(q k^T * scale + rpe + masks) v on a block layout's
non-zero blocks only, with an online softmax (no S x S and no nnz x block^2 buffer). CUDA tensors
run the Triton kernels (on an sm90 GPU the Hopper kernels of ``kernels/hopper/`` where they take
the call: ``kernels/fused/backend.py``); CPU tensors run the same kernels under ``TRITON_INTERPRET=1`` (that is how
CI tests them) and the block-row-walking PyTorch reference (with a row-by-row backward)
otherwise.

Semantics (``kernels/reference.py`` is the executable definition):

- grouped-query attention: q ``(B, Hq, Sq, D)``, k and v ``(B, Hkv, Sk, D)``; query head h reads
  key/value head ``h // (Hq // Hkv)`` (no copies: the kernels index the shared head) and dk, dv
  are the sums over each group's query heads;
- any Sq and Sk; the layout is ``(Hq or 1, ceil(Sq/block), ceil(Sk/block))``; ``causal=True`` is
  bottom-right aligned (query i sees key j <= i + Sk - Sq, as in FlashAttention) and also masks
  inside diagonal blocks (DeepSpeed did not);
- masks follow DeepSpeed: ``"add"`` adds the value, ``"mul"`` turns 0 into -inf and keeps the
  rest, bool masks mean True = keep; the scale applies to q k^T only;
- ``segment_ids`` ``(B, S)`` (packed sequences, Sq == Sk): a query sees only keys with its id;
  tiles whose tokens share no id are skipped, so packed documents cost what they cost;
- a query with nothing to attend to outputs 0 and gets zero gradients, never NaN; its lse
  (``return_lse``, natural log) is -inf;
- gradients flow to q, k and v (and through lse); masks and rpe get none.

fp32 inputs are accepted (dot products in full fp32, slower); fp16/bf16 are the fast path. Head
dims are any multiple of 8 up to 256 (tiles pad to the next power of two). The backward is
deterministic by default: no atomics, each gradient element is reduced by a single program
(``deterministic=False`` lets the Hopper kernels reduce-add dQ, which is faster).

Under ``torch.compile`` calls go through ``torch.library`` custom ops (``fused/op.py``), so a
compiled model has no graph break here; eager calls take the autograd function directly.
"""
from __future__ import annotations

import torch

from .fused import op as _attn_op
from .fused.call import natural_lse, run_backward, run_forward
from .fused.args import check_args


class _BlockSparseAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, args, with_lse):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse, plan = run_forward(args, q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args, ctx.plan = args, plan
        if not with_lse:
            return out
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no work
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse=None):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = run_backward(ctx.args, ctx.plan, q, k, v, out, lse, dout, dlse)
        return dq, dk, dv, None, None


def blocksparse_attention(q, k, v, layout, block, *, causal=False, sm_scale=None,
                          key_padding_mask=None, key_padding_mask_mode="add",
                          attn_mask=None, attn_mask_mode="mul", rpe=None, segment_ids=None,
                          return_lse=False, backend="auto", deterministic=True):
    """Block-sparse attention of q ``(B, Hq, Sq, D)`` with k, v ``(B, Hkv, Sk, D)`` on ``layout``.

    ``layout`` is ``(Hq or 1, ceil(Sq/block), ceil(Sk/block))`` (or 2-D: shared by every head)
    of 0/1; ``block`` one of 16, 32, 64, 128. ``key_padding_mask`` is ``(B, Sk)``, ``attn_mask``
    ``(Sq, Sk)`` indexed [query, key], ``rpe`` ``(B or 1, Hq or 1, Sq, Sk)`` added to the
    scores, ``segment_ids`` ``(B, S)`` integers; ``sm_scale`` (any finite real scalar) defaults
    to D ** -0.5. Returns a tensor shaped and typed like ``q``, or ``(out, lse)`` with
    ``return_lse`` (lse ``(B, Hq, Sq)`` float32, natural log). Invalid arguments raise ValueError.

    ``backend``: ``"auto"`` runs the Hopper (Gluon) kernels on an sm90 GPU when they support the
    call and the portable Triton kernels otherwise (``SPARSECLI_ATTENTION_BACKEND`` replaces
    ``"auto"``); ``"hopper"`` or ``"triton"`` forces one (ValueError with the reason when the Hopper
    kernels cannot take the call). ``sparsecli info`` says which path a call takes and why.

    ``deterministic`` (default True): the backward gives bitwise the same gradients every run (no
    atomics). ``False`` lets the Hopper kernels reduce-add dQ from the dK/dV pass (5 GEMMs per
    tile pair instead of 7, FA3's design); the portable Triton path stays deterministic either way.
    """
    args = check_args(q, k, v, layout, block, causal, sm_scale, key_padding_mask, key_padding_mask_mode,
                      attn_mask, attn_mask_mode, rpe, segment_ids, backend, deterministic)
    if torch.compiler.is_compiling():
        # Contiguous operands inside the graph: the compiler lays out the projections once, and
        # the op saves these for the backward (which would otherwise copy them again there).
        out, lse = _attn_op.call(q.contiguous(), k.contiguous(), v.contiguous(), args)
    elif not return_lse:
        return _BlockSparseAttention.apply(q, k, v, args, False)
    else:
        out, lse = _BlockSparseAttention.apply(q, k, v, args, True)
    return (out, natural_lse(lse)) if return_lse else out
