"""One call of the fused attention, forward and backward: the kernels the dispatch chose (portable
Triton or Hopper, ``args.backend``), or on plain CPU tensors (no Triton interpreter) the
block-row-walking PyTorch reference and its row-by-row backward (O(S * block) memory either way).

Shared by the eager autograd function (``kernels/attention.py``) and the ``torch.library`` ops
(``kernels/fused/op.py``), so compiled graphs and eager calls run the same code. The kernels'
lse is in log2 units with +inf for a query that attends nothing (what the backward wants);
``natural_lse`` turns it into what the API returns.
"""
from __future__ import annotations

import torch

from .plan import LOG2E, AttnArgs, _backward, _forward, _Plan
from .._checks import interpreter_bf16, interpreting
from ..lut import as_layout

LN2 = 0.6931471805599453


def natural_lse(lse: torch.Tensor) -> torch.Tensor:
    """The kernels' lse (log2 units, +inf for a query attending nothing) as the API returns it:
    natural log, -inf for such a query."""
    return torch.where(lse == float("inf"), float("-inf"), lse * LN2)


def uses_kernels(q: torch.Tensor) -> bool:
    """CUDA tensors, or any tensor under Triton's interpreter, run the Triton kernels."""
    return q.is_cuda or interpreting()


def _reference_kwargs(args: AttnArgs, q):
    detach = (lambda t: None if t is None else t.detach())
    return dict(causal=args.causal, sm_scale=args.sm_scale, key_padding_mask=detach(args.key_padding_mask),
                key_padding_mask_mode=args.key_padding_mask_mode, attn_mask=detach(args.attn_mask),
                attn_mask_mode=args.attn_mask_mode, rpe=detach(args.rpe), segment_ids=args.segment_ids,
                compute_dtype=torch.float32 if q.dtype != torch.float32 else None)


def _kernel_inputs(*xs):
    """Contiguous operands in the dtype the kernels run: Triton's interpreter computes bf16 dots
    wrongly (numpy has no bf16, triton#11584), so CPU bf16 runs the same kernels in fp32."""
    if interpreter_bf16(xs[0]):
        xs = tuple(None if x is None else x.float() for x in xs)
    return tuple(None if x is None else x.contiguous() for x in xs)


def _launchers(args: AttnArgs):
    """(forward, backward) of the kernels chosen for the call (``args.backend``): both take the
    plan and contiguous operands, and keep lse in the same log2 convention."""
    if args.backend == "hopper":
        import functools

        from ..hopper import launch

        return launch.forward, functools.partial(launch.backward, deterministic=args.deterministic)
    return _forward, _backward  # deterministic either way: the portable path has no atomic dQ


def run_forward(args: AttnArgs, q, k, v):
    """(out in q's dtype, lse in the kernels' log2 convention, plan or None for the reference)."""
    if not uses_kernels(q):
        from ..reference import blocksparse_attention_reference

        as_layout(args.layout)  # the same 0/1 validation as the kernel path
        with torch.no_grad():
            out, lse = blocksparse_attention_reference(q, k, v, args.layout, args.block, return_lse=True,
                                                       **_reference_kwargs(args, q))
        return out.to(q.dtype), torch.where(lse == float("-inf"), float("inf"), lse * LOG2E), None
    qc, kc, vc = _kernel_inputs(q, k, v)
    plan = _Plan(args, qc.shape, kc.shape, qc.dtype, qc.device)
    out, lse = _launchers(args)[0](plan, qc, kc, vc)
    return out.to(q.dtype), lse, plan


def run_backward(args: AttnArgs, plan, q, k, v, out, lse, dout, dlse):
    """(dq, dk, dv) in the inputs' dtypes; ``dlse``: gradient of the log2 lse output, or None."""
    if dout is None:
        dout = torch.zeros_like(out)
    dlse_nat = None if dlse is None else dlse * LOG2E
    if not uses_kernels(q):
        from ..reference import reference_backward

        grads = reference_backward(dout, dlse_nat, q, k, v, out, args.layout, args.block, **_reference_kwargs(args, q))
    else:
        qc, kc, vc, oc, doc = _kernel_inputs(q, k, v, out, dout)
        if plan is None:
            plan = _Plan(args, qc.shape, kc.shape, qc.dtype, qc.device)
        grads = _launchers(args)[1](plan, qc, kc, vc, oc, lse, doc, dlse_nat)
    return tuple(g.to(t.dtype) for g, t in zip(grads, (q, k, v)))
