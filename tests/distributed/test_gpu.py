"""context_parallel_attention on a GPU: world size 1 on NCCL (including NCCL's all-to-all with
zero-size splits, which some torch releases mishandled), and the bf16 numerics of the
local/remote/helper merge, every rank of a plan emulated on the one GPU, against the float64
oracle with the kernels' own tolerances (``tests/kernels/oracle.py``)."""
import socket
from datetime import timedelta

import pytest
import torch

from sparsecli.distributed import context_parallel_attention, exchange, plan_context_parallel
from sparsecli.distributed.cases import Case
from sparsecli.distributed.loopback import emulate
from sparsecli.kernels import blocksparse_attention, blocksparse_attention_dense

pytestmark = pytest.mark.gpu

OUT_BOUND, GRAD_BOUND = 1.5e-2, 3e-2  # bf16, norm-relative: the kernel tests' bounds


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.fixture(scope="module")
def nccl_world_of_one():
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            timeout=timedelta(seconds=60))
    yield dist
    dist.destroy_process_group()


def inputs(S, Hq, Hkv, D, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(1, Hq, S, D, device="cuda", generator=gen).bfloat16()
    k, v = (torch.randn(1, Hkv, S, D, device="cuda", generator=gen).bfloat16() for _ in range(2))
    dout = torch.randn(1, Hq, S, D, device="cuda", generator=gen).bfloat16()
    return q, k, v, dout


def test_nccl_world_of_one_equals_the_kernel(nccl_world_of_one):
    lay = Case("streaming", True).layout(seq_len=8192, heads=8)
    plan = plan_context_parallel(lay, 128, 1, causal=True)
    q, k, v, dout = inputs(8192, 8, 2, 128)
    mine = [x.clone().requires_grad_() for x in (q, k, v)]
    out = context_parallel_attention(*mine, plan)
    out.backward(dout)
    full = [x.clone().requires_grad_() for x in (q, k, v)]
    want = blocksparse_attention(*full, lay, 128, causal=True)
    want.backward(dout)
    assert torch.equal(out, want)  # one part: the same kernel call, merged exactly
    for a, b in zip(mine, full):
        assert torch.equal(a.grad, b.grad)


def test_nccl_zero_size_splits(nccl_world_of_one):
    dist = nccl_world_of_one
    empty = torch.empty(0, dtype=torch.uint8, device="cuda")
    out = torch.empty(0, dtype=torch.uint8, device="cuda")
    dist.all_to_all_single(out, empty, [0], [0])
    specs = [[((1, 2, 0, 8), torch.bfloat16), ((1, 2, 0), torch.float32)]]
    pending = exchange.start([[torch.empty(1, 2, 0, 8, dtype=torch.bfloat16, device="cuda")]], specs, group=None,
                             device=torch.device("cuda"), active=True)
    got = pending.wait()
    assert [tuple(t.shape) for t in got[0]] == [(1, 2, 0, 8), (1, 2, 0)]
    torch.cuda.synchronize()


@pytest.mark.parametrize("name, world_size, strategy", [
    ("bigbird", 4, "balanced"),  # a spread global row: helper partials merged on its owner
    ("causal_sliding_window", 4, "zigzag"),
    ("fixed", 3, "contiguous"),
])
def test_bf16_merge_within_the_kernel_tolerance(name, world_size, strategy):
    case = next(c for c in (Case("bigbird", False), Case("causal_sliding_window", True), Case("fixed", False))
                if c.name == name)
    S, Hq, Hkv, D = 8192, 8, 2, 128
    lay = case.layout(seq_len=S, heads=Hq)
    plan = plan_context_parallel(lay, 128, world_size, causal=case.causal, strategy=strategy)
    if name == "bigbird":
        assert plan.spread.any()
    q, k, v, dout = inputs(S, Hq, Hkv, D, seed=1)

    def shards(x):
        return [plan.shard(x, r, dim=2) for r in range(world_size)]

    outs, _, grads = emulate(plan, shards(q), shards(k), shards(v), dout=shards(dout))
    got = [plan.unshard(outs, dim=2)] + [plan.unshard(g, dim=2) for g in grads]
    full = [x.clone().requires_grad_() for x in (q, k, v)]
    kernel_out = blocksparse_attention(*full, lay, 128, causal=case.causal)
    kernel_out.backward(dout)
    kernel = [kernel_out.detach()] + [x.grad for x in full]
    ref64 = [x.detach().double().requires_grad_() for x in (q, k, v)]
    ref = blocksparse_attention_dense(*ref64, lay.cuda(), 128, causal=case.causal, compute_dtype=torch.float64)
    ref.backward(dout.double())
    oracle = [ref.detach()] + [x.grad for x in ref64]
    for what, a, b, o, bound in zip(("out", "dq", "dk", "dv"), got, kernel, oracle, (OUT_BOUND,) + (GRAD_BOUND,) * 3):
        assert torch.isfinite(a).all(), what
        err, kernel_err = rel(a, o), rel(b, o)
        assert err <= bound, f"{what}: {err:.2e} > {bound}"
        assert err <= 1.5 * kernel_err + 1e-3, f"{what}: split {err:.2e} vs one call {kernel_err:.2e}"
