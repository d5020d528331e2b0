"""Merging partial attention results by their log-sum-exp, and the merge's gradient.

A rank computes its rows' attention in parts (its own keys, the fetched keys, parts computed by
other ranks for spread rows), each a softmax over a subset of the row's keys with output ``o_x``
and natural-log ``lse_x``. The whole row is

    lse = log(sum_x exp(lse_x)),   o = sum_x w_x o_x,   w_x = exp(lse_x - lse),

exact in any order, so parts are folded in one at a time (``fold``). Everything runs in fp32:
bf16 partial outputs rounded once each, the weights and the sums never in half precision.
A part with lse -inf (a row that saw no key in it) has weight 0; a row with no key anywhere
stays o = 0, lse = -inf, and gets zero gradients, never NaN.

The gradient of a part needs only the merged result: ``do_x = w_x do`` and
``dlse_x = w_x (<do, o_x - o> + dlse)`` (``part_grads``).
"""
from __future__ import annotations

import torch


def _weights(lse_x: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """exp(lse_x - lse), 0 where the part saw nothing (lse_x -inf, lse possibly -inf too)."""
    finite = torch.isfinite(lse_x)
    return torch.where(finite, torch.exp(torch.where(finite, lse_x - lse, 0.0)), 0.0)


def fold(out: torch.Tensor | None, lse: torch.Tensor | None, o_x: torch.Tensor, lse_x: torch.Tensor):
    """``(out, lse)`` with one more part folded in (``out`` fp32 ``(..., S, D)``, updated in place,
    ``lse`` fp32 ``(..., S)``); ``out is None`` starts from a copy of the part alone."""
    lse_x = lse_x.float()
    if out is None:
        return o_x.to(torch.float32, copy=True), lse_x.clone()
    new = torch.logaddexp(lse, lse_x)  # -inf only where both are
    a, b = _weights(lse, new), _weights(lse_x, new)
    # In place on the accumulator (``out`` is always the merge's own): two passes over it.
    return out.mul_(a[..., None]).addcmul_(o_x, b[..., None]), new


def fold_rows(out: torch.Tensor, lse: torch.Tensor, o_x: torch.Tensor, lse_x: torch.Tensor, rows: torch.Tensor):
    """``fold`` of a part that covers only token ``rows`` (indices along dim -2 of ``out``), in place."""
    o, l = fold(out.index_select(-2, rows), lse.index_select(-1, rows), o_x, lse_x)
    out.index_copy_(-2, rows, o)
    lse.index_copy_(-1, rows, l)
    return out, lse


def part_grads(o_x: torch.Tensor, lse_x: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
               dout: torch.Tensor, dlse: torch.Tensor | None):
    """(d o_x in o_x's dtype, d lse_x fp32) of one part, from the merged ``out``/``lse`` (fp32,
    restricted to the part's rows) and their gradients ``dout``/``dlse`` (``dlse`` may be None)."""
    w = _weights(lse_x.float(), lse)
    dout = dout.float()
    dlse_x = (dout * (o_x.float() - out)).sum(-1)
    if dlse is not None:
        dlse_x = dlse_x + dlse.float()
    return (dout * w[..., None]).to(o_x.dtype), dlse_x * w
