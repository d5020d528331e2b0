"""Host-side launch plumbing of the fused attention: TMA choice, descriptors, stage fallback.

The numerics of every path are checked against the reference in ``test_attention.py``; these
tests pin the decisions the launcher makes around the kernels.
"""
import pytest
import torch

from sparsecli.kernels._checks import interpreting

INTERPRET = interpreting()


def test_launch_steps_down_stages_until_shared_memory_fits():
    """rpe/mask tiles (or fp32 inputs) can overflow shared memory at the tuned pipeline depth:
    the launch retries with one stage fewer, and remembers the depth that fit."""
    from triton.runtime.errors import OutOfResources

    from sparsecli.kernels.fused import plan as attention

    class FakeKernel:
        def __init__(self, fits):
            self.fits, self.calls = fits, []

        def __getitem__(self, grid):
            def run(*args, num_stages, **meta):
                self.calls.append(num_stages)
                if num_stages > self.fits:
                    raise OutOfResources(300_000, 232_448, "shared memory")
            return run

    q = torch.zeros(1, 1, 128, 32)
    plan = attention._Plan(attention.AttnArgs(torch.ones(2, 2), 64), q.shape, q.shape, torch.float16, q.device)
    plan.configs["fwd"] = attention.KernelConfig(64, 64, 4, 4)
    sch = plan.schedule("fwd")
    kernel = FakeKernel(fits=2)
    plan.launch(kernel, "fwd", sch, (q, q, q, q), (1.0,))
    plan.launch(kernel, "fwd", sch, (q, q, q, q), (1.0,))
    assert kernel.calls == [4, 3, 2, 2]
    nothing_fits = FakeKernel(fits=0)
    with pytest.raises(OutOfResources):
        plan.launch(nothing_fits, "fwd", sch, (q, q, q, q), (1.0,))
    assert nothing_fits.calls == [4, 3, 2, 1]


def test_tma_needs_every_operand_aligned():
    from sparsecli.kernels.fused.plan import _has_tma

    buf = torch.zeros(2 * 64 * 16 + 1, dtype=torch.float16)
    aligned, shifted = buf[:2048].view(1, 2, 64, 16), buf[1:2049].view(1, 2, 64, 16)
    assert _has_tma(aligned, aligned) == INTERPRET
    assert not _has_tma(aligned, shifted)


def test_rows_descriptor_matches_from_tensor():
    from triton.tools.tensor_descriptor import TensorDescriptor

    from sparsecli.kernels.fused.plan import _rows_descriptor

    x = torch.zeros(2, 3, 64, 32, dtype=torch.float16)
    got, want = _rows_descriptor(x, 16), TensorDescriptor.from_tensor(x.view(-1, 32), [16, 32])
    assert got.base is x
    assert (list(got.shape), list(got.strides), list(got.block_shape)) == \
        (list(want.shape), list(want.strides), list(want.block_shape))
    assert _rows_descriptor(torch.zeros_like(x), 16).base is not x  # templates are not shared state


def test_tma_follows_the_device_capability(monkeypatch):
    """The CUDA branch of the TMA choice, without a GPU: Hopper (9.x) and later take TMA."""
    from sparsecli.kernels.fused import tma as attention

    class FakeCuda:
        is_cuda = True
        device = torch.device("cuda", 1)

        def data_ptr(self):
            return 1024

    seen = []
    for cap, want in (((8, 0), False), ((9, 0), True), ((10, 0), True)):
        monkeypatch.setattr(attention, "_capability", lambda index, cap=cap: seen.append(index) or cap)
        assert attention._has_tma(FakeCuda(), FakeCuda()) is want
    assert seen == [1, 1, 1]
    assert attention._device_index(torch.device("cuda", 3)) == 3


def test_second_call_builds_nothing(monkeypatch):
    """Schedules, configs and launch knobs come from the layout cache after the first call: the
    hot path reads no layout contents (no host sync on a GPU layout, nothing for torch.compile
    or a CUDA graph to trip over)."""
    from sparsecli.kernels import lut
    from sparsecli.kernels.fused import plan as _attn_plan

    q = torch.zeros(1, 4, 100, 24)
    kv = torch.zeros(1, 2, 70, 24)
    args = _attn_plan.AttnArgs(torch.ones(4, 7, 5), 16, True, 0.2)
    builds = []
    real_schedule, real_static = lut._build_schedule, _attn_plan._Static

    monkeypatch.setattr(lut, "_build_schedule", lambda *a: builds.append("schedule") or real_schedule(*a))
    monkeypatch.setattr(_attn_plan, "_Static", lambda *a: builds.append("static") or real_static(*a))
    calls = []
    for _ in range(2):
        builds.clear()
        plan = _attn_plan._Plan(args, q.shape, kv.shape, torch.float16, q.device)
        for which in ("fwd", "dq", "dkdv"):
            plan.schedule(which)
        calls.append(list(builds))
    assert calls[0].count("static") == 1 and calls[0].count("schedule") >= 2  # fwd and dQ may share one
    assert calls[1] == []


def test_padded_head_dim_descriptor():
    """TMA tiles of a head dim that is not a power of two are HEAD_DIM wide; the tensor's own D
    bounds the copy, so the columns past it read as zeros."""
    from sparsecli.kernels.fused.plan import _rows_descriptor

    x = torch.zeros(1, 2, 64, 40, dtype=torch.float16)
    d = _rows_descriptor(x, 32, 64)
    assert (list(d.shape), list(d.block_shape), list(d.strides)) == ([128, 40], [32, 64], [40, 1])
