"""The dispatch between the Hopper and the portable Triton kernels (``kernels/_attn_backend.py``), on CPU.

Decisions are checked with made-up device capabilities; the route of a call (eager and
``torch.compile(fullgraph=True)``, forward and backward) with the Hopper launchers replaced by
the PyTorch reference, so the plumbing from the public function to ``hopper.launch`` runs
without a GPU. The Hopper kernels' numerics are the GPU tier's (``test_hopper_gpu.py``).
"""
from __future__ import annotations

import pytest
import torch

from sparsecli.kernels import blocksparse_attention
from sparsecli.kernels.fused import backend as _attn_backend
from sparsecli.kernels.fused import call as _attn_call
from sparsecli.kernels.fused.backend import ENV, CallSpec, choose
from sparsecli.kernels.hopper import launch, support
from sparsecli.kernels.reference import blocksparse_attention_reference, reference_backward
from tests.kernels.oracle import make_layout, rand

H100 = (9, 0)
BF16 = torch.bfloat16


@pytest.fixture(autouse=True)
def _gluon_and_env(monkeypatch):
    # Decisions must not depend on this machine's triton or environment.
    monkeypatch.setattr(support, "gluon_import_error", lambda: "")
    monkeypatch.delenv(ENV, raising=False)


def spec(**kw):
    base = dict(capability=H100, dtype=BF16, head_dim=128, block=128, q_len=4096, k_len=4096)
    return CallSpec(**dict(base, **kw))


def test_auto_takes_hopper_on_sm90_for_a_supported_call():
    assert choose("auto", spec())[0] == "hopper"
    assert choose("auto", spec(dtype=torch.float16, head_dim=64, q_len=128, k_len=8192))[0] == "hopper"


@pytest.mark.parametrize("kw,reason", [
    (dict(capability=None), "no CUDA GPU"),
    (dict(capability=(8, 0)), "sm80"),
    (dict(capability=(10, 0)), "sm100"),
    (dict(dtype=torch.float32), "float32"),
    (dict(head_dim=96), "head dim 96"),
    (dict(block=64), "block 64"),
    (dict(q_len=1), "Sq=1"),
    (dict(k_len=4000), "Sk=4000"),
    (dict(masks=True), "key_padding_mask/attn_mask/rpe"),
    (dict(segments=True), "segment_ids"),
    (dict(sm_scale=-0.1), "sm_scale=-0.1"),
])
def test_auto_falls_back_to_triton_with_the_reason(kw, reason):
    backend, why = choose("auto", spec(**kw))
    assert backend == "triton" and reason in why
    with pytest.raises(ValueError, match=f"backend='hopper'.*{reason}.*backend='auto'"):
        choose("hopper", spec(**kw))


def test_no_gluon_is_a_reason(monkeypatch):
    monkeypatch.setattr(support, "gluon_import_error", lambda: "ImportError: no gluon")
    assert choose("auto", spec()) == ("triton", "triton has no Gluon Hopper support (ImportError: no gluon)")


def test_triton_is_always_taken_when_asked():
    assert choose("triton", spec())[0] == "triton"
    assert choose("triton", spec(capability=None))[0] == "triton"


@pytest.mark.parametrize("bad", ["cuda", "", None, "Hopper"])
def test_unknown_backend_is_a_value_error(bad):
    with pytest.raises(ValueError, match="backend must be one of auto, hopper, triton"):
        choose(bad, spec())


def test_environment_variable_replaces_auto_only(monkeypatch):
    monkeypatch.setenv(ENV, "triton")
    assert choose("auto", spec()) == ("triton", f"{ENV}='triton'")
    monkeypatch.setenv(ENV, "hopper")
    assert choose("triton", spec())[0] == "triton"  # an explicit argument wins
    with pytest.raises(ValueError, match=f"{ENV}='hopper'.*sm80"):
        choose("auto", spec(capability=(8, 0)))
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(ValueError, match=f"{ENV} must be one of"):
        choose("auto", spec())


def test_public_function_refuses_a_forced_hopper_call_on_cpu():
    q = rand(1, 2, 256, 64)
    with pytest.raises(ValueError, match="backend='hopper'.*no CUDA GPU"):
        blocksparse_attention(q, q, q, torch.ones(2, 2), 128, backend="hopper")
    with pytest.raises(ValueError, match="backend must be one of"):
        blocksparse_attention(q, q, q, torch.ones(2, 2), 128, backend="gpu")


def test_call_spec_reads_the_call():
    from sparsecli.kernels.fused.args import check_args

    q, k = rand(2, 4, 256, 64), rand(2, 2, 384, 64)
    args = check_args(q, k, k, torch.ones(2, 3), 128, True, None, None, "add", None, "mul", None, None)
    assert args.backend == "triton"  # CPU tensors
    assert _attn_backend.call_spec(q, k, args) == CallSpec(None, torch.float32, 64, 128, 256, 384, False, False,
                                                           0.125)


# ---- the route of a call to the Hopper launchers (replaced by the reference) ----------------

class _FakeHopper:
    """Stands in for ``hopper.launch.forward``/``backward``: records the plan it was handed and
    computes with the reference, in the kernels' lse convention (log2, +inf when empty)."""

    def __init__(self):
        self.calls = []
        self.deterministic = []  # what each backward was asked for

    def forward(self, plan, q, k, v):
        self.calls.append(("fwd", plan))
        st = plan.static
        out, lse = blocksparse_attention_reference(q, k, v, st.layout, st.block, causal=st.causal,
                                                   sm_scale=plan.sm_scale, return_lse=True)
        return out, torch.where(lse == float("-inf"), float("inf"), lse * launch.LOG2E)

    def backward(self, plan, q, k, v, out, lse, dout, dlse=None, deterministic=True):
        self.calls.append(("bwd", plan))
        self.deterministic.append(deterministic)
        st = plan.static
        return reference_backward(dout, dlse, q, k, v, out, st.layout, st.block, causal=st.causal,
                                  sm_scale=plan.sm_scale)


@pytest.fixture
def fake_hopper(monkeypatch):
    fake = _FakeHopper()
    monkeypatch.setattr(_attn_backend, "hopper_reason", lambda spec: "")  # "an sm90 GPU"
    monkeypatch.setattr(_attn_call, "uses_kernels", lambda q: True)  # CPU tensors take the kernel path
    monkeypatch.setattr(launch, "forward", fake.forward)
    monkeypatch.setattr(launch, "backward", fake.backward)
    return fake


def _gqa_inputs():
    q = rand(2, 4, 256, 64).requires_grad_()
    k, v = (rand(2, 2, 384, 64).requires_grad_() for _ in range(2))
    return q, k, v


def _loss(q, k, v, lay, **kw):
    out, lse = blocksparse_attention(q, k, v, lay, 128, causal=True, return_lse=True, **kw)
    return (out ** 2).sum() + torch.where(torch.isinf(lse), 0.0, lse).sum()


def _reference_grads(q, k, v, lay):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_attn_call, "uses_kernels", lambda q: False)
        loss = _loss(q, k, v, lay, backend="triton")  # plain CPU: the reference path
    return (loss, *torch.autograd.grad(loss, (q, k, v)))


def _close(got, want):
    """fp32 gradients of two summation orders (reference backward vs autograd through the
    reference): within 1e-5 of the largest entry; an elementwise atol of 1e-5 failed by chance."""
    return (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_eager_call_runs_the_hopper_launchers_with_hopper_schedules(fake_hopper):
    q, k, v = _gqa_inputs()
    lay = make_layout(4, 2, 3, block=128, q_len=256, k_len=384)
    loss = _loss(q, k, v, lay)
    grads = torch.autograd.grad(loss, (q, k, v))
    assert [c for c, _ in fake_hopper.calls] == ["fwd", "bwd"]
    plan = fake_hopper.calls[0][1]
    assert plan is fake_hopper.calls[1][1]  # the backward reuses the forward's plan
    assert plan.group == 2 and (plan.Sq, plan.Sk) == (256, 384)
    for which, tiles in (("fwd", (128, 128)), ("dq", (128, 128)), ("dkdv", (128, 64))):
        sch = plan.schedule(which)
        assert (sch.outer, sch.inner, sch.nseg) == (*tiles, 1)
    want = _reference_grads(q, k, v, lay)
    assert torch.allclose(loss, want[0], rtol=1e-5)
    assert all(_close(a, b) for a, b in zip(grads, want[1:]))


def test_compiled_call_records_the_hopper_backend(fake_hopper):
    """fullgraph compile: the choice is made while tracing and travels in the custom op's
    arguments, so the compiled forward and backward reach the Hopper launchers too."""
    torch._dynamo.reset()
    q, k, v = _gqa_inputs()
    lay = make_layout(4, 2, 3, block=128, q_len=256, k_len=384)
    compiled = torch.compile(lambda q, k, v: _loss(q, k, v, lay), fullgraph=True, backend="aot_eager")
    loss = compiled(q, k, v)
    grads = torch.autograd.grad(loss, (q, k, v))
    assert [c for c, _ in fake_hopper.calls] == ["fwd", "bwd"]
    want = _reference_grads(q, k, v, lay)
    assert torch.allclose(loss, want[0], rtol=1e-5)
    assert all(_close(a, b) for a, b in zip(grads, want[1:]))


@pytest.mark.parametrize("compiled", [False, True])
def test_deterministic_reaches_the_hopper_backward(fake_hopper, compiled):
    torch._dynamo.reset()
    q, k, v = _gqa_inputs()
    lay = make_layout(4, 2, 3, block=128, q_len=256, k_len=384)
    for det in (True, False):
        fn = lambda q, k, v, det=det: _loss(q, k, v, lay, deterministic=det)  # noqa: E731
        if compiled:
            fn = torch.compile(fn, fullgraph=True, backend="aot_eager")
        torch.autograd.grad(fn(q, k, v), (q, k, v))
    assert fake_hopper.deterministic == [True, False]


def test_deterministic_must_be_a_bool():
    q = rand(1, 2, 256, 64)
    with pytest.raises(ValueError, match="deterministic must be True or False, got 'no'"):
        blocksparse_attention(q, q, q, torch.ones(2, 2), 128, deterministic="no")


def test_portable_path_takes_deterministic_false_and_stays_deterministic():
    # CPU tensors (the reference path, or the Triton kernels under the interpreter): the same
    # gradients bit for bit either way; only the Hopper kernels have an atomic dQ.
    q, k, v = (rand(1, 2, 256, 32).requires_grad_() for _ in range(3))
    lay = make_layout(2, 4, 4, block=64, q_len=256, k_len=256)
    grads = []
    for det in (True, False):
        out = blocksparse_attention(q, k, v, lay, 64, deterministic=det)
        grads.append(torch.autograd.grad((out ** 2).sum(), (q, k, v)))
    assert all(torch.equal(a, b) for a, b in zip(*grads))


def test_compiled_call_honours_a_forced_triton_backend(fake_hopper, monkeypatch):
    torch._dynamo.reset()
    monkeypatch.setenv(ENV, "triton")
    monkeypatch.setattr(_attn_call, "uses_kernels", lambda q: False)  # the Triton route's CPU path
    q, k, v = _gqa_inputs()
    lay = make_layout(4, 2, 3, block=128, q_len=256, k_len=384)
    torch.compile(lambda q, k, v: _loss(q, k, v, lay), fullgraph=True, backend="aot_eager")(q, k, v).backward()
    assert fake_hopper.calls == []


# ---- sparsecli info -------------------------------------------------------------------------

def _info(monkeypatch, capability, *args):
    import json

    from typer.testing import CliRunner

    from sparsecli.bench import results
    from sparsecli.cli import app

    real = results.capture_env
    monkeypatch.setattr(results, "capture_env", lambda: dict(real(), gpu="NVIDIA H200" if capability else None,
                                                             capability=capability))
    res = CliRunner().invoke(app, ["info", "--json", *args])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_info_says_which_path_each_call_takes_on_sm90(monkeypatch):
    doc = _info(monkeypatch, "9.0")
    assert doc["hopper_path"].startswith("available for block 128")
    calls = doc["attention_calls"]
    assert calls["bf16 D128 block 128 S 8192"].startswith("hopper: ")
    assert calls["bf16 D128 block 64"] == "triton: layout block 64 (the Hopper kernels take block 128)"
    assert calls["bf16 D128 decode (Sq 1)"].startswith("triton: Sq=1, Sk=32768")
    assert calls["bf16 D128 + segment_ids"].startswith("triton: segment_ids")
    doc = _info(monkeypatch, "9.0", "--block", "128", "--head-dim", "96")
    assert doc["attention_calls"] == {"this call": "triton: head dim 96 (the Hopper kernels take 64 or 128)"}


def test_info_says_which_backward_each_deterministic_value_runs(monkeypatch):
    backward = _info(monkeypatch, "9.0")["backward"]
    assert "hopper kernels: one dK/dV launch that also reduce-adds dQ" in backward["deterministic=False"]
    assert "triton kernels: deterministic anyway" in backward["deterministic=False"]
    assert backward["deterministic=True (default)"].startswith("hopper kernels: a dQ launch and a dK/dV launch")
    backward = _info(monkeypatch, None)["backward"]
    assert list(backward.values())[1].startswith("triton kernels: deterministic anyway")
    assert "hopper" not in " ".join(backward.values())


def test_info_on_other_gpus_and_without_one(monkeypatch):
    doc = _info(monkeypatch, "8.0", "--block", "128")
    assert "sm80" in doc["hopper_path"] and doc["attention_calls"]["this call"].startswith("triton: GPU is sm80")
    monkeypatch.setenv(ENV, "triton")
    doc = _info(monkeypatch, "9.0", "--block", "128")
    assert doc["attention_calls"]["this call"] == f"triton: {ENV}='triton'"
    assert doc["attention_backend_env"] == f"{ENV}=triton"
    doc = _info(monkeypatch, None)
    assert doc["hopper_path"] == "not available: no CUDA GPU" and list(doc["attention_calls"]) == ["every call"]


def test_info_examples_survive_repeated_calls(monkeypatch):
    first = _info(monkeypatch, "9.0")["attention_calls"]
    assert _info(monkeypatch, "9.0")["attention_calls"] == first
