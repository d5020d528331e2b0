"""The PyTorch path: the block-row-walking reference (and its row-by-row backward) vs the dense
oracle, and ``blocksparse_attention`` on plain CPU tensors (no Triton interpreter), which runs it.

No kernels here: these run in any environment, in seconds.
"""
from __future__ import annotations

import pytest
import torch

from sparsecli.kernels import blocksparse_attention, blocksparse_attention_dense, blocksparse_attention_reference
from sparsecli.kernels.reference import _row_blocks, reference_backward
from tests.kernels.oracle import check, make_layout, make_masks, packed_segments, rand, rel

F64 = torch.float64

CASES = [  # B, Hq, Hkv, Sq, Sk, block, causal, per-head, mask kind, mode, segments
    (2, 4, 2, 64, 64, 16, False, True, None, None, None), (2, 4, 1, 50, 90, 16, True, False, "kpm", "add", None),
    (1, 2, 2, 90, 50, 32, True, True, "am", "mul", None), (2, 2, 1, 1, 100, 32, True, False, "rpe", "bh", None),
    (2, 4, 2, 96, 96, 16, True, True, None, None, 3), (2, 2, 2, 70, 70, 64, False, False, "am", "bool", 4),
]


@pytest.mark.parametrize("B,Hq,Hkv,Sq,Sk,block,causal,per_head,mask,mode,segments", CASES)
def test_row_walker_matches_dense_oracle(B, Hq, Hkv, Sq, Sk, block, causal, per_head, mask, mode, segments):
    """Forward, lse, autograd gradients, and ``reference_backward`` (row by row, with an lse
    gradient) against the dense oracle in float64."""
    lay = make_layout(Hq if per_head else 1, -(-Sq // block), -(-Sk // block), block=block, q_len=Sq, k_len=Sk)
    kw, _ = make_masks(mask, mode, B, Hq, Sq, Sk, "cpu")
    if segments:
        kw["segment_ids"] = packed_segments(B, Sq, segments, "cpu")
    q = rand(B, Hq, Sq, 24, dtype=F64).requires_grad_()
    k, v = (rand(B, Hkv, Sk, 24, dtype=F64).requires_grad_() for _ in range(2))
    dout, dlse = rand(B, Hq, Sq, 24, dtype=F64), rand(B, Hq, Sq, dtype=F64)
    grads = {}
    for name, fn in (("rows", blocksparse_attention_reference), ("dense", blocksparse_attention_dense)):
        out, lse = fn(q, k, v, lay, block, causal=causal, return_lse=True, **kw)
        loss = (out * dout).sum() + torch.where(torch.isinf(lse), 0.0, lse * dlse).sum()
        grads[name] = (out, lse, *torch.autograd.grad(loss, (q, k, v)))
    (out, lse, *g), (ref, ref_lse, *g_ref) = grads["rows"], grads["dense"]
    assert rel(out, ref) < 1e-12 and torch.equal(torch.isinf(lse), torch.isinf(ref_lse))
    fin = torch.isfinite(ref_lse)
    assert torch.allclose(lse[fin], ref_lse[fin], atol=1e-12)
    manual = reference_backward(dout, torch.where(torch.isinf(lse), 0.0, dlse), q.detach(), k.detach(),
                                v.detach(), out.detach(), lay, block, causal=causal, **kw)
    for a, b, m in zip(g, g_ref, manual):
        assert rel(a, b) < 1e-10 and rel(m, b) < 1e-10


def test_row_walker_memory_is_per_row():
    """Every step holds one block row's scores: (B, heads, block, keys of that row), never S x S."""
    S, block = 4096, 64
    lay = torch.zeros(2, S // block, S // block, dtype=torch.long)
    idx = torch.arange(S // block)
    lay[:, idx, idx] = 1
    lay[:, idx[1:], idx[:-1]] = 1
    lay[1, 3] = 1  # one global row in head 1
    q, k = rand(1, 2, S, 8), rand(1, 1, S, 8)
    largest = max(s.numel() for *_, s, _ in _row_blocks(q, k, lay, block, 1.0, True, None, None, None, None,
                                                        torch.float32))
    assert largest == block * S  # the global row: one head, all keys


def test_long_sequence_on_cpu():
    """32k tokens on a CPU: the dense path would need 32768^2 scores per head (4 GiB in fp32)."""
    S, block = 32768, 128
    nb = S // block
    lay = torch.zeros(nb, nb, dtype=torch.long)
    idx = torch.arange(nb)
    lay[idx, idx] = 1
    lay[idx[1:], idx[:-1]] = 1
    q, k, v = (rand(1, 2, S, 16) for _ in range(3))
    out = blocksparse_attention_reference(q, k, v, lay, block, causal=True)
    i = S - 5  # one query by hand: keys of its own and the previous block, causal
    keys = torch.arange((i // block - 1) * block, i + 1)
    p = torch.softmax(q[0, 1, i] @ k[0, 1, keys].T * 16 ** -0.5, -1)
    assert torch.allclose(out[0, 1, i], p @ v[0, 1, keys], atol=1e-5)


@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16, torch.float32))
@pytest.mark.parametrize("Hkv,Sk,segments", [(1, 80, None), (2, 64, 3)])
def test_cpu_without_interpreter_runs_reference(monkeypatch, dtype, Hkv, Sk, segments):
    """Plain CPU tensors: the reference forward and row-by-row backward, in the inputs' dtype."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    check(2, 2, 64, 16, 16, dtype, Hkv=Hkv, Sk=Sk, causal=True, per_head=True, segments=segments, lse=True,
          bound=3e-2 if dtype == torch.bfloat16 else None)


def test_cpu_path_saves_no_scores(monkeypatch):
    """The CPU path's autograd graph keeps q, k, v, out and lse, not the reference's row scores."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = (rand(1, 2, 256, 16).requires_grad_() for _ in range(3))
    out = blocksparse_attention(q, k, v, torch.ones(4, 4), 64)
    saved = [t for t in out.grad_fn.saved_tensors]
    assert sum(t.numel() for t in saved) <= 4 * q.numel() + q.shape[2] * 2
