"""Every rank of a plan in one process (``loopback.emulate``): the same steps as the gloo runs,
in lockstep, up to 8 ranks, against the single-process result (fp32, CPU reference path)."""
import pytest
import torch

from sparsecli.distributed import plan_context_parallel
from sparsecli.distributed.loopback import emulate, lockstep

from .cases import AttnCase, rel_err, single_process


@pytest.fixture(autouse=True)
def reference_path(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # plain CPU tensors: the PyTorch reference


@pytest.mark.parametrize("case, world_size", [
    (AttnCase(nb=12, global_factor=1.0), 8),
    (AttnCase(nb=12, strategy="zigzag", causal=True, seed=3), 5),
    (AttnCase(nb=6, causal=True, layout_heads="2d", q_heads=4, kv_heads=2, seed=4, global_rows=(1,), empty_rows=()), 8),
])
def test_emulated_ranks_match_single_process(case, world_size):
    plan = case.plan(world_size)
    q, k, v, dout, dlse = case.inputs()

    def shards(x):
        return [plan.shard(x, r, dim=2) for r in range(world_size)]

    outs, lses, (dq, dk, dv) = emulate(plan, shards(q), shards(k), shards(v), dout=shards(dout), dlse=shards(dlse))
    want = single_process(case)
    for name, got in (("out", outs), ("lse", lses), ("dq", dq), ("dk", dk), ("dv", dv)):
        assert rel_err(plan.unshard(got, dim=2), want[name]) <= 1e-5, name


def test_lockstep_checks_what_ranks_send():
    def rank(sent_shape):
        got = yield [[torch.zeros(sent_shape)], [torch.zeros(2)]], [[((2,), torch.float32)], [((2,), torch.float32)]], True
        return got.wait()

    assert [len(x) for x in lockstep([rank((2,)), rank((2,))])] == [2, 2]
    with pytest.raises(AssertionError, match=r"rank 0 sends rank 0 \[\(\(3,\), torch.float32\)\]"):
        lockstep([rank((3,)), rank((2,))])


def test_forward_only_builds_no_graph():
    plan = plan_context_parallel(torch.ones(4, 4), 16, 2)
    x = [torch.randn(1, 1, 32, 16) for _ in range(2)]
    outs, lses = emulate(plan, x, x, x)
    assert all(not o.requires_grad for o in outs) and [tuple(o.shape) for o in outs] == [(1, 1, 32, 16)] * 2
