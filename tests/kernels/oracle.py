"""One attention call checked against the float64 dense oracle, for every kernel test module.

``check`` draws fresh random inputs (and layout, masks, segments), runs ``blocksparse_attention``
(or another function of the same signature) forward and backward, and compares output, lse and
the gradients of q, k and v with ``blocksparse_attention_dense`` in float64, plus the rows that
must be exactly zero (empty layout rows, fully masked queries) and lse's -inf pattern.
"""
from __future__ import annotations

import os

import torch

from sparsecli.kernels import blocksparse_attention, blocksparse_attention_dense

OUT_BOUND = {torch.float16: 5e-3, torch.bfloat16: 1.5e-2, torch.float32: 5e-3}
GEN = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))


def rand(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=GEN, dtype=torch.float32).to(device=device, dtype=dtype)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def make_layout(H, rows, cols=None, density=0.5, empty_row=True, block=1, q_len=None, k_len=None,
                device="cpu"):
    """Random 0/1 ``(H, rows, cols)`` layout with the bottom-right diagonal set (causal runs keep
    work on most rows) and, with ``empty_row``, one row left empty."""
    cols = rows if cols is None else cols
    lay = (torch.rand(H, rows, cols, generator=GEN) < density).long()
    q_len, k_len = q_len or rows * block, k_len or cols * block
    last_q = torch.clamp(torch.arange(1, rows + 1) * block, max=q_len) - 1
    diag = torch.clamp((last_q + k_len - q_len) // block, 0, cols - 1)
    lay[:, torch.arange(rows), diag] = 1
    if empty_row and rows > 1:
        lay[:, rows // 2, :] = 0
    return lay.to(device)


def make_masks(kind, mode, B, H, Sq, Sk, device):
    """(kwargs, queries fully masked: bool (B, Sq) or None) for one mask kind and mode."""
    kw, dead = {}, None
    if kind == "kpm":
        keep = torch.rand(B, Sk, generator=GEN) < 0.7
        keep[-1] = False  # the last batch element has every key padded: all its rows are dead
        dead = torch.zeros(B, Sq, dtype=torch.bool)
        dead[-1] = True
        if mode == "bool":
            m = keep
        elif mode == "mul":
            m = keep.to(torch.float16)
        else:  # HF extended mask in one row, -inf elsewhere
            m = torch.where(keep, 0.0, -10000.0)
            m[-1] = float("-inf")
        kw = dict(key_padding_mask=m.to(device), key_padding_mask_mode="add" if mode == "add" else "mul")
    elif kind == "am":
        keep = torch.rand(Sq, Sk, generator=GEN) < 0.8
        keep[min(3, Sq - 1)] = False  # query 3 sees nothing
        dead = torch.zeros(B, Sq, dtype=torch.bool)
        dead[:, min(3, Sq - 1)] = True
        if mode == "bool":
            m = keep
        elif mode == "mul":
            m = keep.float() * rand(Sq, Sk).abs().add(0.5)  # any non-zero keeps
        else:
            m = torch.where(keep, rand(Sq, Sk), torch.tensor(float("-inf")))
        kw = dict(attn_mask=m.to(device), attn_mask_mode="add" if mode == "add" else "mul")
    elif kind == "rpe":
        shape = {"bh": (B, H), "h": (1, H), "b": (B, 1)}[mode]
        kw = dict(rpe=rand(*shape, Sq, Sk).to(device))
    return kw, dead


def packed_segments(B, S, docs, device, sort=True):
    """(B, S) int64 segment ids: ``docs`` documents of random lengths per row (sorted, as
    packing makes them), or ids drawn at random per token (``sort=False``)."""
    ids = torch.randint(0, docs, (B, S), generator=GEN)
    return (torch.sort(ids, 1).values if sort else ids).to(device)


def check(B, H, S, D, block, dtype, *, Hkv=None, Sk=None, causal=False, per_head=False, mask=None,
          mode=None, segments=None, lse=False, device="cpu", density=0.5, fn=blocksparse_attention,
          bound=None, **fn_kwargs):
    """Run ``fn`` on q (B, H, S, D) and k, v (B, Hkv, Sk, D) and compare with the oracle."""
    Hkv, Sq, Sk = Hkv or H, S, Sk or S
    rows, cols = -(-Sq // block), -(-Sk // block)
    lay = make_layout(H if per_head else 1, rows, cols, density, block=block, q_len=Sq, k_len=Sk, device=device)
    if not per_head and (B + Sq) % 2:
        lay = lay[0]  # 2-D layouts apply to every head
    kw, dead = make_masks(mask, mode, B, H, Sq, Sk, device)
    if segments is not None:
        kw["segment_ids"] = segments if torch.is_tensor(segments) else packed_segments(B, Sq, segments, device)
    # backend= picks the kernel under test; the float64 oracle has one definition and no backend
    kw.update({name: val for name, val in fn_kwargs.items() if name not in ("backend", "deterministic")})
    call_kw = {**kw, **fn_kwargs}
    q = rand(B, H, Sq, D, dtype=dtype, device=device).requires_grad_()
    k, v = (rand(B, Hkv, Sk, D, dtype=dtype, device=device).requires_grad_() for _ in range(2))
    res = fn(q, k, v, lay, block, causal=causal, return_lse=lse, **call_kw) if lse else \
        fn(q, k, v, lay, block, causal=causal, **call_kw)
    out = res[0] if lse else res
    dout = rand(B, H, Sq, D, dtype=dtype, device=device)
    dlse = rand(B, H, Sq, device=device)
    loss = (out.float() * dout.float()).sum()
    if lse:  # the gradient through lse too (ring attention merges partial results with it)
        loss = loss + torch.where(torch.isinf(res[1]), 0.0, res[1] * dlse).sum()
    loss.backward()

    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref, ref_lse = blocksparse_attention_dense(q64, k64, v64, lay, block, causal=causal, return_lse=True,
                                               compute_dtype=torch.float64, **kw)
    loss = (ref * dout.double()).sum()
    if lse:
        loss = loss + torch.where(torch.isinf(ref_lse), 0.0, ref_lse * dlse.double()).sum()
    loss.backward()
    tol = bound or OUT_BOUND[dtype]
    for name, got, want, t in (("out", out, ref, tol), ("dq", q.grad, q64.grad, 2 * tol),
                               ("dk", k.grad, k64.grad, 2 * tol), ("dv", v.grad, v64.grad, 2 * tol)):
        assert got.dtype == dtype and got.shape == want.shape, f"{name}: {got.dtype} {tuple(got.shape)}"
        assert torch.isfinite(got).all(), f"{name} has NaN/inf"
        err = rel(got, want)
        assert err <= t, f"{name}: rel error {err:.2e} > {t:.1e}"
    if lse:
        got_lse = res[1]
        assert got_lse.dtype == torch.float32 and got_lse.shape == (B, H, Sq)
        assert torch.equal(torch.isneginf(got_lse), torch.isneginf(ref_lse)), "lse -inf pattern"
        fin = torch.isfinite(ref_lse)
        err = (got_lse[fin].double() - ref_lse[fin]).abs().max().item() if fin.any() else 0.0
        assert err <= 10 * tol, f"lse: abs error {err:.2e}"
    nothing = ~torch.isfinite(ref_lse)  # queries that attend nothing: exactly zero out and dq
    assert (out.detach()[nothing] == 0).all() and (q.grad[nothing] == 0).all()
    lay3 = torch.as_tensor(lay).bool().cpu().reshape(-1, rows, cols)
    empty_rows = (~lay3.any(-1)).repeat_interleave(block, 1)[:, :Sq].expand(H, Sq).to(device)
    assert (out.detach()[:, empty_rows] == 0).all() and (q.grad[:, empty_rows] == 0).all()
    if dead is not None:
        assert (out.detach().transpose(1, 2)[dead.to(device)] == 0).all()
    return lay
