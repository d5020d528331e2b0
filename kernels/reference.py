"""Plain-PyTorch block-sparse attention: the executable definition, the CPU path and the test oracle.

Two implementations of one semantics (the Triton kernels match both):

- ``blocksparse_attention_reference`` walks the layout one block-row at a time: a row's queries
  against the keys of that row's blocks only, so memory is O(S * block + keys of one row) and a
  CPU can run 32k-token layouts. This is what CPU tensors run without the Triton interpreter.
- ``blocksparse_attention_dense`` expands the layout to an Sq x Sk token mask and runs dense
  attention (O(Sq * Sk) memory): the oracle the tests compare everything with.

Semantics: q ``(B, Hq, Sq, D)``, k and v ``(B, Hkv, Sk, D)``, query head h reads key/value head
``h // (Hq // Hkv)``; the layout is ``(Hq or 1, ceil(Sq/block), ceil(Sk/block))``; ``causal`` is
bottom-right aligned (query i sees key j <= i + Sk - Sq); ``segment_ids`` ``(B, S)`` keeps only
pairs with equal ids; masks follow DeepSpeed (``kernels/masks.py``); a query with nothing to
attend to outputs 0 and has lse -inf. ``lse`` is the natural-log logsumexp of the scaled scores
(rpe and masks included) over the keys a query attends.
"""
from __future__ import annotations

import torch

from .lut import as_layout
from .masks import additive_mask


def token_mask(layout: torch.Tensor, block: int, causal: bool = False, device=None, *,
               q_len: int | None = None, k_len: int | None = None) -> torch.Tensor:
    """Expand a block layout to a bool ``(H, Sq, Sk)`` token mask (True = attend).

    ``q_len``/``k_len`` crop the last block row/column (default: the layout's full extent);
    ``causal`` keeps key j for query i only if j <= i + Sk - Sq.
    """
    lay = as_layout(layout).to(device) if device is not None else as_layout(layout)
    q_len = lay.shape[1] * block if q_len is None else q_len
    k_len = lay.shape[2] * block if k_len is None else k_len
    keep = lay.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :q_len, :k_len]
    if causal:
        keep = keep & _causal(torch.arange(q_len, device=keep.device), torch.arange(k_len, device=keep.device),
                              q_len, k_len)
    return keep


def _causal(rows: torch.Tensor, cols: torch.Tensor, q_len: int, k_len: int) -> torch.Tensor:
    return cols[None, :] <= rows[:, None] + (k_len - q_len)


def _bias(key_padding_mask, key_padding_mask_mode, attn_mask, attn_mask_mode, dt):
    """The masks as additive (B, Sk) and (Sq, Sk) biases in ``dt`` (None when absent)."""
    kpm = None if key_padding_mask is None else \
        additive_mask(key_padding_mask, key_padding_mask_mode, "key_padding_mask").to(dt)
    am = None if attn_mask is None else additive_mask(attn_mask, attn_mask_mode, "attn_mask").to(dt)
    return kpm, am


def _softmax_rows(scores, allowed, v, return_lse):
    """softmax(scores) @ v over ``allowed`` pairs; rows with none give 0 (and lse -inf)."""
    allowed = allowed & (scores != float("-inf"))
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    scores = torch.where(allowed, scores, neg_inf)
    has_any = allowed.any(-1, keepdim=True)
    # A row with nothing allowed gets zeros (not NaN): softmax on zeros, then masked out.
    safe = torch.where(has_any, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    out = torch.matmul(torch.softmax(safe, dim=-1) * has_any, v)
    lse = torch.logsumexp(scores, dim=-1) if return_lse else None
    return out, lse


def _prepare(q, k, v, sm_scale, compute_dtype):
    dt = compute_dtype or q.dtype
    scale = q.shape[-1] ** -0.5 if sm_scale is None else float(sm_scale)
    return dt, scale, q.to(dt), k.to(dt), v.to(dt), q.shape[1] // k.shape[1]


def blocksparse_attention_dense(q, k, v, layout, block, *, causal=False, sm_scale=None,
                                key_padding_mask=None, key_padding_mask_mode="add", attn_mask=None,
                                attn_mask_mode="mul", rpe=None, segment_ids=None, return_lse=False,
                                compute_dtype=None):
    """Dense-math oracle: the layout expanded to an ``(Sq, Sk)`` token mask, O(Sq * Sk) memory.

    Key/value heads are repeated per query head (a copy: this is the oracle, not a fast path).
    Returns ``out`` (in ``compute_dtype``, default q's) or ``(out, lse)`` with ``return_lse``.
    """
    dt, scale, qc, kc, vc, group = _prepare(q, k, v, sm_scale, compute_dtype)
    Sq, Sk = q.shape[2], k.shape[2]
    kc, vc = kc.repeat_interleave(group, 1), vc.repeat_interleave(group, 1)
    scores = torch.matmul(qc, kc.transpose(-1, -2)) * scale
    if rpe is not None:
        scores = scores + rpe.to(dt)
    kpm, am = _bias(key_padding_mask, key_padding_mask_mode, attn_mask, attn_mask_mode, dt)
    if kpm is not None:
        scores = scores + kpm[:, None, None, :]
    if am is not None:
        scores = scores + am
    allowed = token_mask(layout, block, causal, device=q.device, q_len=Sq, k_len=Sk)[None]
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    out, lse = _softmax_rows(scores, allowed, vc, return_lse)
    return (out, lse) if return_lse else out


def _row_blocks(q, k, layout, block, scale, causal, rpe, kpm, am, segment_ids, dt):
    """Per (layout head, block row): (query heads slice, their key/value heads, query tokens slice,
    key tokens, scaled biased scores (B, h, rows, keys), allowed pairs). Only the row's keys are
    touched: slices and index_select on the row's tokens, never a copy of a whole tensor."""
    Hq, Sq, Sk = q.shape[1], q.shape[2], k.shape[2]
    group = Hq // k.shape[1]
    lay = as_layout(layout)
    for lh in range(lay.shape[0]):  # a shared layout serves every query head at once
        hs = slice(0, Hq) if lay.shape[0] == 1 else slice(lh, lh + 1)
        kv_heads = torch.arange(hs.start, hs.stop, device=q.device) // group
        for r in range(lay.shape[1]):
            rs = slice(r * block, min((r + 1) * block, Sq))
            rows = torch.arange(rs.start, rs.stop, device=q.device)
            cols = [torch.arange(c * block, min((c + 1) * block, Sk)) for c in lay[lh, r].nonzero().flatten().tolist()]
            cols = (torch.cat(cols) if cols else torch.zeros(0, dtype=torch.long)).to(q.device)
            ks = k.index_select(2, cols).index_select(1, kv_heads).to(dt)
            scores = torch.matmul(q[:, hs, rs].to(dt), ks.transpose(-1, -2)) * scale
            if rpe is not None:
                scores = scores + rpe[:, hs if rpe.shape[1] > 1 else slice(0, 1), rs].index_select(3, cols).to(dt)
            if kpm is not None:
                scores = scores + kpm[:, cols][:, None, None, :]
            if am is not None:
                scores = scores + am[rs][:, cols]
            allowed = torch.ones(1, 1, len(rows), len(cols), dtype=torch.bool, device=q.device)
            if causal:
                allowed = allowed & _causal(rows, cols, Sq, Sk)
            if segment_ids is not None:
                allowed = allowed & (segment_ids[:, rs][:, None, :, None] == segment_ids[:, cols][:, None, None, :])
            yield hs, kv_heads, rs, cols, scores, allowed


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
    segment_ids: torch.Tensor | None = None,
    return_lse: bool = False,
    compute_dtype: torch.dtype | None = None,
):
    """Block-sparse attention walking the layout block-row by block-row (see the module docstring).

    ``compute_dtype`` (default: the inputs' dtype) is what the math runs in; tests pass float64.
    Returns ``out`` in ``compute_dtype``, or ``(out, lse)`` (lse ``(B, Hq, Sq)``) with
    ``return_lse``. Differentiable in q, k and v through autograd (which keeps every row's
    scores; ``reference_backward`` computes the same gradients row by row in O(S * block)).
    """
    dt, scale, _, _, vc, _ = _prepare(q, k, v, sm_scale, compute_dtype)
    kpm, am = _bias(key_padding_mask, key_padding_mask_mode, attn_mask, attn_mask_mode, dt)
    outs, lses, row_outs, row_lses, last = [], [], [], [], None
    for hs, kv_heads, _, cols, scores, allowed in _row_blocks(q, k, layout, block, scale, causal, rpe,
                                                              kpm, am, segment_ids, dt):
        if last is not None and hs.start != last:  # next layout head: close this one's rows
            outs.append(torch.cat(row_outs, 2))
            lses.append(torch.cat(row_lses, 2) if return_lse else None)
            row_outs, row_lses = [], []
        last = hs.start
        o, lse = _softmax_rows(scores, allowed, vc.index_select(2, cols).index_select(1, kv_heads), return_lse)
        row_outs.append(o)
        row_lses.append(lse)
    outs.append(torch.cat(row_outs, 2))
    lses.append(torch.cat(row_lses, 2) if return_lse else None)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, 1)
    if not return_lse:
        return out
    return out, (lses[0] if len(lses) == 1 else torch.cat(lses, 1))


def reference_backward(dout, dlse, q, k, v, out, layout, block, *, causal=False, sm_scale=None,
                       key_padding_mask=None, key_padding_mask_mode="add", attn_mask=None,
                       attn_mask_mode="mul", rpe=None, segment_ids=None, compute_dtype=None):
    """(dq, dk, dv) of ``blocksparse_attention_reference`` given the output's gradient ``dout``
    (and lse's, ``dlse``, or None), recomputing each block row's probabilities: O(S * block)
    memory, no autograd (it runs inside ``torch.library`` ops). dk, dv sum over query groups."""
    dt, scale, _, _, vc, group = _prepare(q, k, v, sm_scale, compute_dtype)
    kpm, am = _bias(key_padding_mask, key_padding_mask_mode, attn_mask, attn_mask_mode, dt)
    B, Hkv, Sk, D = k.shape
    do = dout.to(dt)
    delta = (do * out.to(dt)).sum(-1)
    if dlse is not None:  # d lse / d s = p: the lse gradient enters as -dlse in delta
        delta = delta - dlse.to(dt)
    dq = torch.zeros(q.shape, dtype=dt, device=q.device)
    dk = torch.zeros(B, Hkv * Sk, D, dtype=dt, device=q.device)
    dv = torch.zeros(B, Hkv * Sk, D, dtype=dt, device=q.device)
    for hs, kv_heads, rs, cols, scores, allowed in _row_blocks(q, k, layout, block, scale, causal, rpe,
                                                               kpm, am, segment_ids, dt):
        allowed = allowed & (scores != float("-inf"))
        lse = torch.logsumexp(torch.where(allowed, scores, float("-inf")), -1, keepdim=True)
        p = torch.where(allowed, torch.exp(scores - lse), 0.0)
        do_r = do[:, hs, rs]
        ks = k.index_select(2, cols).index_select(1, kv_heads).to(dt)
        vs = vc.index_select(2, cols).index_select(1, kv_heads)
        ds = p * (torch.matmul(do_r, vs.transpose(-1, -2)) - delta[:, hs, rs, None])
        dq[:, hs, rs] = torch.matmul(ds, ks) * scale
        flat = (kv_heads[:, None] * Sk + cols[None, :]).flatten()  # group heads land on one K/V head
        dk.index_add_(1, flat, (torch.matmul(ds.transpose(-1, -2), q[:, hs, rs].to(dt)) * scale).flatten(1, 2))
        dv.index_add_(1, flat, torch.matmul(p.transpose(-1, -2), do_r).flatten(1, 2))
    return dq, dk.view(k.shape), dv.view(v.shape)
