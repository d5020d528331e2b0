"""Providers on the CPU: the three-op provider is SparseSelfAttention's own three-op path."""

import torch

from tests.interpreter import run_interpreted

from sparsecli.modules import backends as attention_backends
from sparsecli.bench import providers


def test_three_op_provider_reuses_the_attention_backend_op(monkeypatch):
    built = []
    monkeypatch.setattr(attention_backends, "_ThreeOp", lambda *a: built.append(a) or (lambda *x, **kw: kw))
    layout = torch.ones(2, 4, 4, dtype=torch.int64)
    fn = providers.setup("three-op", providers.Ctx(layout, 32, False, 0.3, 128))
    assert len(built) == 1 and built[0][0] is layout and built[0][1] == 32
    assert fn(None, None, None) == {"causal": False, "sm_scale": 0.3}


def test_cpu_ops_without_the_interpreter_are_the_fused_op(monkeypatch):
    from sparsecli import FixedSparsityConfig, SparseSelfAttention
    from sparsecli.kernels import blocksparse_attention_reference

    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the suite sets it on CPU machines
    layout = torch.ones(2, 4, 4, dtype=torch.int64)
    for backend in attention_backends.BACKENDS:
        op = attention_backends.make_op(backend, layout, 16, torch.device("cpu"))
        assert type(op).__name__ == "_FusedOp"  # blocksparse_attention runs the reference there
        m = SparseSelfAttention(FixedSparsityConfig(num_heads=2, num_local_blocks=2, attention="unidirectional"),
                                max_seq_length=128, backend=backend)
        q, k, v = (torch.randn(1, 2, 64, 16, dtype=torch.bfloat16) for _ in range(3))
        keep = torch.ones(1, 64, dtype=torch.bool)
        keep[0, 50:] = False
        out = m(q, k, v, key_padding_mask=keep)
        ref = blocksparse_attention_reference(q, k, v, m.get_layout(64), m.block, causal=True,
                                              key_padding_mask=keep, key_padding_mask_mode="mul",
                                              compute_dtype=torch.float32).to(torch.bfloat16)
        assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
    assert not hasattr(attention_backends, "_ReferenceOp")


def check_three_op_provider(S=128, block=32, D=16):
    from sparsecli.kernels import blocksparse_attention_reference

    g = torch.Generator().manual_seed(0)
    layout = (torch.rand(2, S // block, S // block, generator=g) < 0.5).long()
    layout[:, range(S // block), range(S // block)] = 1
    q, k, v = (torch.randn(1, 2, S, D, generator=g) for _ in range(3))
    for causal in (False, True):
        fn = providers.setup("three-op", providers.Ctx(layout.clone(), block, causal, 0.3, S))
        for _ in range(2):
            out = fn(q, k, v)
            ref = blocksparse_attention_reference(q, k, v, layout, block, causal=causal, sm_scale=0.3,
                                                  compute_dtype=torch.float64)
            err = (out.double() - ref).abs().max().item()
            assert err < 1e-5, (causal, err)


def test_three_op_provider_under_triton_interpreter():
    run = run_interpreted("tests.bench.test_providers", "check_three_op_provider")
    assert run.returncode == 0, run.stderr[-3000:]
