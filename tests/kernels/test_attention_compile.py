"""``torch.compile`` and CUDA graphs around ``blocksparse_attention``.

A function calling it compiles with ``fullgraph=True`` (no graph break), forward and backward,
and gives eager's numbers: through the Triton kernels (interpreter on CPU, or the GPU) and
through the PyTorch reference (plain CPU). On CPU the compiler backend is ``aot_eager``: it
traces the same graphs (dynamo + AOTAutograd, the op's fake and autograd registrations) without
waiting for C++ codegen on the CI machine; the GPU tier runs inductor and a CUDA-graph capture.
"""
from __future__ import annotations

import pytest
import torch

from sparsecli.kernels import blocksparse_attention
from tests.interpreter import run_interpreted
from tests.kernels.oracle import make_layout, packed_segments, rand

F16 = torch.float16


def _step(lay, block, **kw):
    def step(q, k, v):
        out, lse = blocksparse_attention(q, k, v, lay, block, causal=True, return_lse=True, **kw)
        return (out.float() ** 2).sum() + torch.where(torch.isinf(lse), 0.0, lse).sum() * 0.1
    return step


def _compare(step, inputs, backend, compiled_grads_equal=True):
    compiled = torch.compile(step, fullgraph=True, backend=backend)
    got = compiled(*inputs)
    got_grads = torch.autograd.grad(got, inputs)
    want = step(*inputs)
    want_grads = torch.autograd.grad(want, inputs)
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_grads, want_grads):
        assert torch.equal(a, b) if compiled_grads_equal else torch.allclose(a, b, rtol=1e-3, atol=1e-3)


def _inputs(B, Hq, Hkv, Sq, Sk, D, dtype=torch.float32, device="cpu"):
    q = rand(B, Hq, Sq, D, dtype=dtype, device=device).requires_grad_()
    return (q, *(rand(B, Hkv, Sk, D, dtype=dtype, device=device).requires_grad_() for _ in range(2)))


def check_fullgraph_kernels():
    """Run in a fresh interpreter-forced process (dynamo state, TRITON_INTERPRET at import)."""
    torch._dynamo.reset()
    lay = make_layout(4, 5, 6, block=16, q_len=70, k_len=90)
    _compare(_step(lay, 16), _inputs(2, 4, 2, 70, 90, 24), "aot_eager")
    ids = packed_segments(2, 64, 3, "cpu")
    lay = make_layout(1, 4, 4, block=16)
    _compare(_step(lay, 16, segment_ids=ids, key_padding_mask=torch.ones(2, 64, dtype=torch.bool)),
             _inputs(2, 2, 1, 64, 64, 16), "aot_eager")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA: the kernels run in the Triton interpreter (the GPU tier compiles them natively)")
def test_fullgraph_compile_through_the_kernels():
    res = run_interpreted("tests.kernels.test_attention_compile", "check_fullgraph_kernels")
    assert res.returncode == 0, res.stderr[-3000:]


def test_fullgraph_compile_through_the_reference(monkeypatch):
    """Plain CPU tensors: the custom op runs the reference and its row-by-row backward."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    torch._dynamo.reset()
    lay = make_layout(2, 3, 5, block=32, q_len=80, k_len=150)
    _compare(_step(lay, 32), _inputs(1, 2, 1, 80, 150, 16), "aot_eager")


def test_compile_sees_no_layout_contents():
    """The traced Python reads shapes only: a new layout of the same shape reuses the graph."""
    torch._dynamo.reset()
    counts = []
    step = torch.compile(lambda q, k, v, lay: blocksparse_attention(q, k, v, lay, 16).sum(), fullgraph=True,
                         backend=lambda gm, ex: counts.append(1) or gm.forward)
    q, k, v = _inputs(1, 2, 2, 32, 32, 16)
    for density in (0.3, 0.9):
        with torch.no_grad():
            step(q, k, v, make_layout(2, 2, density=density))
    assert len(counts) == 1


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", (F16, torch.bfloat16))
def test_gpu_fullgraph_inductor(dtype):
    torch._dynamo.reset()
    lay = make_layout(8, 8, 12, block=64, q_len=512, k_len=768, device="cuda")
    inputs = _inputs(2, 8, 2, 512, 768, 128, dtype=dtype, device="cuda")
    _compare(_step(lay, 64, segment_ids=None), inputs, "inductor", compiled_grads_equal=False)


@pytest.mark.gpu
def test_gpu_cuda_graph_captures_a_call():
    """After one warm-up call (index tables built and cached), forward and backward of a call
    with GQA and packed segments replay from a CUDA graph with the eager call's numbers."""
    lay = make_layout(1, 16, 16, block=64, device="cuda")
    q, k, v = _inputs(2, 4, 2, 1024, 1024, 64, dtype=F16, device="cuda")
    ids = packed_segments(2, 1024, 5, "cuda")
    dout = torch.randn_like(q)

    def run():
        out = blocksparse_attention(q, k, v, lay, 64, causal=True, segment_ids=ids)
        return (out, *torch.autograd.grad(out, (q, k, v), dout))

    # Autograd nodes keep the stream they were made on, and a capture may not wait on the default
    # stream (pytorch#164302): every eager call runs on a side stream, as torch's recipe does.
    stream = torch.cuda.Stream()

    def eager():
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            res = run()
        torch.cuda.current_stream().wait_stream(stream)
        return res

    eager()  # warm-up: index tables built and cached, kernels compiled
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = run()
    ids.copy_(packed_segments(2, 1024, 5, "cuda"))  # new packing: the graph must see it
    want = eager()
    graph.replay()
    torch.cuda.synchronize()
    for a, b in zip(got, want):
        assert torch.equal(a, b)
