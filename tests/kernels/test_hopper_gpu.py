"""The Hopper (Gluon) path through the public ``blocksparse_attention(..., backend="hopper")``, on an
sm90 GPU (``-m gpu``), against the float64 dense oracle (``oracle.check``: fresh random inputs,
layouts with an empty row, output, lse, gradients of q, k and v, exact zeros where nothing is
attended).

The grid crosses dtype, head dim and causal with grouped-query heads (MHA, GQA, MQA), query and
key lengths that differ (bottom-right causal), per-head layouts and ``return_lse`` with its
gradient; every forward loop variant and both CTA schemes run dense long rows (split over
programs and merged); one test poisons every output buffer of the launchers with NaN first.
"""
import itertools

import pytest
import torch

from sparsecli.kernels import blocksparse_attention
from sparsecli.kernels.fused.plan import AttnArgs, _Plan
from sparsecli.kernels.hopper import launch
from sparsecli.kernels.hopper import variants as V
from tests.kernels.oracle import check, make_layout, rand, rel


def _sm90():
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _sm90(), reason="needs an sm90 GPU (H100/H200)")]

GRID = list(itertools.product((torch.float16, torch.bfloat16), (64, 128), (False, True)))
# (Hkv, Sk) per grid point, in turn: MHA at Sq == Sk, GQA with more keys, MQA with fewer keys.
SHAPES = ((4, 1024), (2, 1536), (1, 512))


@pytest.mark.parametrize("dtype,D,causal", GRID,
                         ids=[f"{str(g[0])[6:]}-d{g[1]}{'-causal' if g[2] else ''}" for g in GRID])
def test_hopper_grid(dtype, D, causal):
    i = GRID.index((dtype, D, causal))
    Hkv, Sk = SHAPES[i % len(SHAPES)]
    check(2, 4, 1024, D, 128, dtype, Hkv=Hkv, Sk=Sk, causal=causal, per_head=i % 2 == 0, lse=i % 4 < 2,
          device="cuda", backend="hopper")


@pytest.mark.parametrize("loop", V.FWD_LOOPS, ids=str)
@pytest.mark.parametrize("persistent", (True, False))
def test_hopper_loops_on_long_split_rows(loop, persistent):
    # 32 key tiles per row: the forward splits rows over programs and merges them.
    with launch.variant(loop, persistent):
        check(1, 2, 4096, 128, 128, torch.bfloat16, density=1.0, causal=not persistent, device="cuda",
              backend="hopper")


def test_hopper_launchers_write_every_output():
    B, H, Hkv, S, D = 2, 4, 2, 2048, 128
    lay = make_layout(H, S // 128, block=128)
    q = rand(B, H, S, D, dtype=torch.bfloat16, device="cuda")
    k, v = (rand(B, Hkv, S, D, dtype=torch.bfloat16, device="cuda") for _ in range(2))
    dout = rand(B, H, S, D, dtype=torch.bfloat16, device="cuda")
    plan = _Plan(AttnArgs(lay, 128, True, D ** -0.5, backend="hopper"), q.shape, k.shape, q.dtype, q.device)
    nan = lambda t: torch.full_like(t, float("nan"))  # noqa: E731
    out, lse = launch.forward(plan, q, k, v, out=nan(q), lse=torch.full((B, H, S), float("nan"), device="cuda"))
    grads = launch.backward(plan, q, k, v, out, lse, dout, grads=(nan(q), nan(k), nan(v)))
    qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
    want = blocksparse_attention(qg, kg, vg, lay, 128, causal=True, backend="triton")
    want_grads = torch.autograd.grad(want, (qg, kg, vg), dout)
    assert torch.isfinite(out).all() and not torch.isnan(lse).any()
    assert rel(out, want) < 1e-2
    for got, ref in zip(grads, want_grads):
        assert torch.isfinite(got).all() and rel(got, ref) < 2e-2


def test_hopper_backward_is_deterministic():
    lay = make_layout(4, 16, block=128)
    q, k, v, dout = (rand(2, 4, 2048, 128, dtype=torch.bfloat16, device="cuda") for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    def grads():
        out = blocksparse_attention(q, k, v, lay, 128, causal=True, backend="hopper")
        return torch.autograd.grad(out, (q, k, v), dout)
    first = grads()
    for _ in range(2):
        assert all(torch.equal(a, b) for a, b in zip(first, grads()))


@pytest.mark.parametrize("dtype,D,causal", GRID,
                         ids=[f"{str(g[0])[6:]}-d{g[1]}{'-causal' if g[2] else ''}" for g in GRID])
def test_hopper_one_launch_backward_grid(dtype, D, causal):
    # deterministic=False: dQ reduce-added (TMA) from the dK/dV kernel, after the Delta pre-pass;
    # GQA/MQA (a dK/dV program adds into its group's query heads) and the lse gradient included.
    i = GRID.index((dtype, D, causal))
    Hkv, Sk = SHAPES[(i + 1) % len(SHAPES)]
    check(2, 4, 1024, D, 128, dtype, Hkv=Hkv, Sk=Sk, causal=causal, per_head=i % 2 == 1, lse=i % 4 >= 2,
          device="cuda", backend="hopper", deterministic=False)


def test_one_launch_backward_runs_one_kernel_fewer_and_matches_the_deterministic_one(monkeypatch):
    from sparsecli.kernels.hopper import _bwd

    launched = []
    for name in ("_attn_dq_hopper", "_attn_dkdv_hopper", "_attn_bwd_delta"):
        kernel = getattr(_bwd, name)
        monkeypatch.setattr(_bwd, name, type("Spy", (), {"__getitem__": lambda self, grid, k=kernel, n=name:
                                                          launched.append(n) or k[grid]})())
    lay = make_layout(4, 16, block=128)
    q, k, v, dout = (rand(2, 4, 2048, 128, dtype=torch.bfloat16, device="cuda") for _ in range(4))
    grads = {}
    for det in (True, False):
        launched.clear()
        qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))
        out = blocksparse_attention(qg, kg, vg, lay, 128, backend="hopper", deterministic=det)
        grads[det] = torch.autograd.grad(out, (qg, kg, vg), dout)
        assert launched == (["_attn_dq_hopper", "_attn_dkdv_hopper"] if det else
                            ["_attn_bwd_delta", "_attn_dkdv_hopper"])
    for a, b in zip(grads[True], grads[False]):
        assert rel(b, a) < 1e-2


def test_auto_takes_the_hopper_kernels_where_they_apply(monkeypatch):
    calls = []
    real = launch.forward
    monkeypatch.setattr(launch, "forward", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q = rand(1, 2, 1024, 128, dtype=torch.bfloat16, device="cuda")
    blocksparse_attention(q, q, q, torch.ones(8, 8), 128)
    assert calls == [1]
    blocksparse_attention(q, q, q, torch.ones(16, 16), 64)  # block 64: the Triton kernels
    blocksparse_attention(q, q, q, torch.ones(8, 8), 128, key_padding_mask=torch.ones(1, 1024, device="cuda"))
    assert calls == [1]


def test_compiled_hopper_call_matches_eager():
    torch._dynamo.reset()
    lay = make_layout(4, 8, block=128)
    q = rand(2, 4, 1024, 64, dtype=torch.bfloat16, device="cuda").requires_grad_()
    k, v = (rand(2, 2, 1024, 64, dtype=torch.bfloat16, device="cuda").requires_grad_() for _ in range(2))

    def step(q, k, v):
        out, lse = blocksparse_attention(q, k, v, lay, 128, causal=True, return_lse=True, backend="hopper")
        return (out.float() ** 2).sum() + torch.where(torch.isinf(lse), 0.0, lse).sum()
    got = torch.compile(step, fullgraph=True)(q, k, v)
    got_grads = torch.autograd.grad(got, (q, k, v))
    want = step(q, k, v)
    want_grads = torch.autograd.grad(want, (q, k, v))
    assert torch.allclose(got, want, rtol=1e-4)
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-3) for a, b in zip(got_grads, want_grads))
