"""Hopper (Gluon) kernels vs the float64 reference, on an sm90 GPU (``-m gpu``).

Fresh random inputs per check, outputs poisoned with NaN before the kernels write them, layouts
with an empty row, heads with their own layouts, rows split over several programs, causal
diagonal tiles; forward (both loop variants) and the deterministic backward.
"""
import itertools
import os

import pytest
import torch

from sparsecli.kernels import hopper
from sparsecli.kernels.hopper import variants as V
from sparsecli.kernels.reference import blocksparse_attention_reference

OUT_BOUND = {torch.float16: 5e-3, torch.bfloat16: 1.5e-2}
_GEN = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))


def _sm90():
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _sm90(), reason="needs an sm90 GPU (H100/H200)")]


def _rand(*shape, dtype):
    return torch.randn(*shape, generator=_GEN).to(device="cuda", dtype=dtype)


def _layout(kind, H, nb):
    if kind == "random":  # per-head layouts, an empty row, a global row (20 tiles: split in the forward)
        lay = (torch.rand(H, nb, nb, generator=_GEN) < 0.3).long()
        lay[:, torch.arange(nb), torch.arange(nb)] = 1
        lay[:, nb // 2, :] = 0
        lay[:, 1, :] = 1
    elif kind == "dense":
        lay = torch.ones(1, nb, nb, dtype=torch.long)
    else:  # sliding window of 3 blocks, shared by the heads
        i = torch.arange(nb)
        lay = ((i[:, None] - i[None, :]).abs() <= 1).long()[None]
    return lay


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check(B, H, S, D, dtype, kind, causal, loop, persistent=True):
    lay = _layout(kind, H, S // 128)
    q, k, v, dout = (_rand(B, H, S, D, dtype=dtype) for _ in range(4))
    scale = D ** -0.5
    sch = hopper.tile_schedules(lay, 128, causal, num_heads=H, batch=B, device=q.device)
    nan = lambda t: torch.full_like(t, float("nan"))  # noqa: E731
    out, lse = hopper.forward(q, k, v, sch, scale, causal, loop=loop, persistent=persistent, out=nan(q),
                              lse=torch.full((B, H, S), float("nan"), device="cuda"))
    dq, dk, dv = hopper.backward(q, k, v, out, lse, dout, sch, scale, causal, persistent=persistent,
                                 grads=(nan(q), nan(k), nan(v)))
    q64, k64, v64 = (t.double().requires_grad_() for t in (q, k, v))
    ref = blocksparse_attention_reference(q64, k64, v64, lay.cuda(), 128, causal=causal, sm_scale=scale,
                                          compute_dtype=torch.float64)
    ref.backward(dout.double())
    bound = OUT_BOUND[dtype]
    for name, got, want, tol in (("out", out, ref, bound), ("dq", dq, q64.grad, 2 * bound),
                                 ("dk", dk, k64.grad, 2 * bound), ("dv", dv, v64.grad, 2 * bound)):
        assert torch.isfinite(got).all(), f"{name} has NaN/inf (unwritten or overflowed)"
        err = rel(got, want)
        assert err <= tol, f"{name}: rel error {err:.2e} > {tol:.1e}"
    empty = ~lay.bool().any(-1).repeat_interleave(128, 1).expand(H, S).cuda()
    assert (out[:, empty] == 0).all() and (dq[:, empty] == 0).all()
    assert torch.isinf(lse[:, empty]).all() and torch.isfinite(lse[:, ~empty]).all()


GRID = list(itertools.product((torch.float16, torch.bfloat16), (64, 128), ("random", "sliding"), (False, True)))


@pytest.mark.parametrize("dtype,D,kind,causal", GRID,
                         ids=[f"{str(g[0])[6:]}-d{g[1]}-{g[2]}{'-causal' if g[3] else ''}" for g in GRID])
def test_hopper_grid(dtype, D, kind, causal):
    # Every forward loop structure meets each dtype, head dim, layout and causal setting.
    i = GRID.index((dtype, D, kind, causal))
    check(2, 3, 2560 if kind == "random" else 2048, D, dtype, kind, causal, V.FWD_LOOPS[i % len(V.FWD_LOOPS)])


@pytest.mark.parametrize("loop", V.FWD_LOOPS, ids=str)
@pytest.mark.parametrize("persistent", (True, False))
def test_hopper_dense_long_rows(loop, persistent):
    check(1, 2, 4096, 128, torch.bfloat16, "dense", False, loop, persistent)


def test_hopper_backward_is_deterministic():
    B, H, S, D = 2, 4, 2048, 128
    lay = _layout("random", H, S // 128)
    q, k, v, dout = (_rand(B, H, S, D, dtype=torch.bfloat16) for _ in range(4))
    sch = hopper.tile_schedules(lay, 128, True, num_heads=H, batch=B, device=q.device)
    out, lse = hopper.forward(q, k, v, sch, D ** -0.5, True)
    first = hopper.backward(q, k, v, out, lse, dout, sch, D ** -0.5, True)
    for _ in range(2):
        again = hopper.backward(q, k, v, out, lse, dout, sch, D ** -0.5, True)
        assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_hopper_attention_entry_matches_triton_path():
    # The differentiable entry (benchmarks use it) against the portable kernels, fwd and bwd.
    from sparsecli.kernels import blocksparse_attention

    lay = _layout("random", 4, 16)
    q, k, v = (_rand(2, 4, 2048, 64, dtype=torch.bfloat16).requires_grad_() for _ in range(3))
    got = hopper.attention(q, k, v, lay, 128, causal=True)
    want = blocksparse_attention(q, k, v, lay, 128, causal=True)
    g_got = torch.autograd.grad(got, (q, k, v), torch.ones_like(got))
    g_want = torch.autograd.grad(want, (q, k, v), torch.ones_like(want))
    assert rel(got, want) < 1e-2
    assert all(rel(a, b) < 2e-2 for a, b in zip(g_got, g_want))
