"""Fused block-sparse attention vs the float64 dense oracle: the core grid.

CPU tier: small shapes through Triton's interpreter (``tests/conftest.py`` sets
``TRITON_INTERPRET=1`` where CUDA is absent); the interpreter has no bf16 dot, so fp16 and fp32.
GPU tier (``-m gpu``): the full grid of block x D x dtype x causal x masks x per-head layouts.
Every check draws fresh random inputs and poisons the kernel's outputs before it writes them.
The issue-11 features (GQA, Sq != Sk, head dims, packed sequences, lse) are in
``test_attention_features.py``.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from sparsecli.kernels import blocksparse_attention, blocksparse_attention_dense
from sparsecli.kernels._checks import interpreting
from tests.kernels.oracle import OUT_BOUND, check, make_layout, rand, rel

INTERPRET = interpreting()
cpu_kernels = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (set without CUDA)")


# ---- CPU tier (interpreter) ------------------------------------------------------------------

CORE = [  # block x dtype x causal, D and per-head varying so each value meets the others
    (b, dt, c, D, ph, S)
    for i, (b, dt, c) in enumerate(itertools.product((16, 32, 64), (torch.float16, torch.float32), (False, True)))
    for D, ph, S in [((16, 32)[i % 2], bool(i // 2 % 2), (128, 256)[i // 4 % 2])]
]


@cpu_kernels
@pytest.mark.parametrize("block,dtype,causal,D,per_head,S", CORE)
def test_core_grid(poison, block, dtype, causal, D, per_head, S):
    check(2, 2, S, D, block, dtype, causal=causal, per_head=per_head)


MASKS = [("kpm", m) for m in ("add", "mul", "bool")] + [("am", m) for m in ("add", "mul", "bool")] \
    + [("rpe", m) for m in ("bh", "h", "b")]


@cpu_kernels
@pytest.mark.parametrize("mask,mode", MASKS)
def test_masks(poison, mask, mode):
    i = MASKS.index((mask, mode))
    check(2, 2, 128, 16, (16, 32)[i % 2], torch.float16, causal=bool(i % 3 == 0),
          per_head=bool(i % 2), mask=mask, mode=mode)


@cpu_kernels
def test_dense_and_empty_layouts(poison):
    check(1, 2, 128, 32, 64, torch.float16, density=1.1)
    check(1, 2, 128, 32, 32, torch.float16, density=0.0)  # only the diagonal, minus one row


@cpu_kernels
def test_bf16_on_cpu_runs_the_kernels_in_fp32(poison):
    check(1, 2, 128, 32, 32, torch.bfloat16, causal=True)


@cpu_kernels
def test_backward_is_deterministic():
    q, k, v = (rand(1, 2, 128, 16, dtype=torch.float16).requires_grad_() for _ in range(3))
    lay = make_layout(2, 8)
    grads = []
    for _ in range(2):
        out = blocksparse_attention(q, k, v, lay, 16, causal=True)
        grads.append(torch.autograd.grad(out, (q, k, v), torch.ones_like(out)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@cpu_kernels
def test_layout_mutation_invalidates_cache():
    q, k, v = (rand(1, 1, 64, 16) for _ in range(3))
    lay = torch.ones(4, 4, dtype=torch.long)
    a = blocksparse_attention(q, k, v, lay, 16)
    lay[:, 1:] = 0
    b = blocksparse_attention(q, k, v, lay, 16)
    ref = blocksparse_attention_dense(q, k, v, lay, 16, compute_dtype=torch.float64)
    assert not torch.allclose(a, b)
    assert rel(b, ref) < 1e-4


@cpu_kernels
@pytest.mark.parametrize("causal,mask,mode", [(False, None, None), (True, "kpm", "add"), (False, "am", "mul")])
def test_split_rows(poison, monkeypatch, causal, mask, mode):
    """Force every multi-tile row to split into 1-tile programs merged by the combine kernel."""
    from sparsecli.kernels.fused import plan as _attn_plan

    monkeypatch.setattr(_attn_plan, "MIN_SPLIT_TILES", 1)
    monkeypatch.setattr(_attn_plan, "_num_sms", lambda device: 10**6)
    check(2, 2, 256, 32, 32, torch.float16, causal=causal, per_head=True, mask=mask, mode=mode)


# ---- GPU tier: the full grid -----------------------------------------------------------------

GPU_GRID = list(itertools.product((16, 32, 64, 128), (32, 64, 128), (torch.float16, torch.bfloat16), (False, True)))
GPU_MASKS = [(None, None)] + MASKS


@pytest.mark.gpu
@pytest.mark.parametrize("block,D,dtype,causal", GPU_GRID)
def test_gpu_grid(poison, block, D, dtype, causal):
    # Every case runs with empty rows; mask kind/mode and per-head rotate so each meets each.
    i = GPU_GRID.index((block, D, dtype, causal))
    mask, mode = GPU_MASKS[i % len(GPU_MASKS)]
    check(2, 4, 1024, D, block, dtype, causal=causal, per_head=bool(i // 2 % 2), mask=mask, mode=mode,
          device="cuda", density=0.3)


@pytest.mark.gpu
@pytest.mark.parametrize("mask,mode", MASKS)
@pytest.mark.parametrize("dtype", (torch.float16, torch.bfloat16))
def test_gpu_masks(poison, mask, mode, dtype):
    check(2, 4, 512, 64, 32, dtype, causal=True, per_head=True, mask=mask, mode=mode, device="cuda")


@pytest.mark.gpu
def test_gpu_backward_is_deterministic():
    q, k, v = (rand(2, 4, 2048, 64, dtype=torch.bfloat16, device="cuda").requires_grad_() for _ in range(3))
    lay = make_layout(4, 64, density=0.3, device="cuda")
    grads = []
    for _ in range(3):
        out = blocksparse_attention(q, k, v, lay, 32, causal=True)
        grads.append(torch.autograd.grad(out, (q, k, v), torch.ones_like(out)))
    for g in grads[1:]:
        for a, b in zip(grads[0], g):
            assert torch.equal(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,causal", [(torch.float16, False), (torch.bfloat16, True)])
def test_gpu_long_rows(poison, dtype, causal):
    # Rows of thousands of keys take the forward's long-row config (64x128 tiles, 3 stages).
    from sparsecli.kernels.fused.plan import LONG_ROW_KEYS
    assert 4096 * 31 / 32 >= LONG_ROW_KEYS
    check(1, 2, 4096, 64, 128, dtype, causal=causal, device="cuda", density=1.0)


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=cpu_kernels),
    pytest.param("cuda", marks=pytest.mark.gpu),
])
@pytest.mark.parametrize("causal", (False, True))
def test_pointer_loads_match_tma_path(poison, monkeypatch, device, causal):
    """Single-segment tiles take TMA loads on Hopper (and under the interpreter); GPUs without
    TMA, or a misaligned base, read the same tiles through pointers."""
    from sparsecli.kernels.fused import plan as _attn_plan

    monkeypatch.setattr(_attn_plan, "_has_tma", lambda *xs: False)
    check(2, 2, 256, 32, 64, torch.float16, causal=causal, per_head=True, mask="kpm", mode="add",
          device=device)


@cpu_kernels
@pytest.mark.parametrize("sm_scale", (-0.3, 0.0, 2.0))
def test_any_finite_scale(sm_scale):
    # A positive scale lets the forward take the row max on raw q k^T; others must not.
    B, H, S, D, block = 1, 2, 128, 16, 64
    lay = make_layout(H, S // block, density=1.1, empty_row=False)
    q, k, v = (rand(B, H, S, D, dtype=torch.float16) for _ in range(3))
    got = blocksparse_attention(q, k, v, lay, block, sm_scale=sm_scale)
    want = blocksparse_attention_dense(q.double(), k.double(), v.double(), lay, block,
                                           sm_scale=sm_scale, compute_dtype=torch.float64)
    assert rel(got, want) <= OUT_BOUND[torch.float16]


@pytest.mark.gpu
def test_gpu_fp32_d128_with_rpe_fits_by_fewer_stages(poison):
    # fp32 128-wide tiles plus an rpe tile per key tile overflow shared memory at the tuned depth.
    check(1, 2, 512, 128, 128, torch.float32, mask="rpe", mode="bh", device="cuda")


@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=cpu_kernels),
    pytest.param("cuda", marks=pytest.mark.gpu),
])
@pytest.mark.parametrize("block,causal,mask,mode", [(16, True, "kpm", "mul"), (64, False, "am", "add"),
                                                    (32, False, "rpe", "bh"), (64, True, None, None)])
def test_both_dkdv_orientations(poison, monkeypatch, device, block, causal, mask, mode):
    """dK/dV computes its scores as keys x queries or as queries x keys (QUERY_MAJOR): both agree
    with the reference, with masks, causal tiles and empty rows."""
    import dataclasses

    from sparsecli.kernels.fused import plan as _attn_plan

    default = _attn_plan.default_configs

    def flipped(*args, **kw):
        fwd, dkdv, dq = default(*args, **kw)
        return fwd, dataclasses.replace(dkdv, query_major=not dkdv.query_major), dq

    monkeypatch.setattr(_attn_plan, "default_configs", flipped)
    check(2, 2, 256, 32, block, torch.float16, causal=causal, per_head=True, mask=mask, mode=mode,
          device=device)
