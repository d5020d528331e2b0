"""SparseSelfAttention: DeepSpeed's behaviour (layout crop, broadcast, key/mask handling) and its fixes.

CPU tier: the PyTorch path (no Triton interpreter), compared with the float64 reference on the
layout crop. GPU tier (``-m gpu``): the same checks through the fused and three-op kernels in
fp16 and bf16, forward and backward.
"""
from __future__ import annotations

import random

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sparsecli import (BigBirdSparsityConfig, DenseSparsityConfig, FixedSparsityConfig,
                       LocalSlidingWindowSparsityConfig, SparseSelfAttention, SparsityConfig)
from sparsecli.kernels import blocksparse_attention_reference
from sparsecli.kernels._checks import interpreting
from tests.interpreter import run_interpreted

BACKENDS = ("fused", "three_op")
# Error bounds relative to the output's scale (inputs are unit normal).
BOUND = {torch.float32: 1e-5, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def qkv(B=2, H=4, L=64, D=16, dtype=torch.float32, device="cpu", grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    ts = [torch.randn(B, H, L, D, generator=g).to(device=device, dtype=dtype) for _ in range(3)]
    return [t.requires_grad_(grad) for t in ts]


def expected(module, q, k, v, **kw):
    """The float64 reference on the module's own layout crop."""
    L = q.shape[2]
    return blocksparse_attention_reference(q, k, v, module.get_layout(L), module.block, causal=module.causal,
                                           key_padding_mask_mode=module.key_padding_mask_mode,
                                           attn_mask_mode=module.attn_mask_mode, compute_dtype=torch.float64, **kw)


def assert_close(out, ref, dtype=torch.float32, slack=1.0):
    err = (out.double() - ref.double()).abs().max().item()
    assert err <= slack * BOUND[dtype] * max(1.0, ref.abs().max().item()), err


def fixed(H=4, **kw):
    return FixedSparsityConfig(num_heads=H, num_local_blocks=2, **kw)


# -- construction and layout -------------------------------------------------------------

def test_default_config_is_fixed_with_four_heads():
    m = SparseSelfAttention()
    assert isinstance(m.sparsity_config, FixedSparsityConfig) and m.num_heads == 4
    assert m.master_layout.shape == (4, 128, 128) and m.master_layout.dtype == torch.int64
    q, k, v = qkv()
    assert_close(m(q, k, v), expected(m, q, k, v))


def test_abstract_config_raises_cleanly():
    with pytest.raises(NotImplementedError, match="abstract"):
        SparseSelfAttention(SparsityConfig(num_heads=4))


def test_layout_at_L_is_the_crop_of_the_master_layout():
    cfg = FixedSparsityConfig(num_heads=2, num_local_blocks=4)
    m = SparseSelfAttention(cfg, max_seq_length=256)
    crop = m.get_layout(96)
    assert torch.equal(crop, m.master_layout[:, :6, :6])
    assert not torch.equal(crop, cfg.make_layout(96))  # a partial last window places globals differently
    q, k, v = qkv(H=2, L=96)
    assert_close(m(q, k, v), expected(m, q, k, v))


def test_ops_are_cached_per_instance_and_key():
    a = SparseSelfAttention(fixed(), max_seq_length=128)
    b = SparseSelfAttention(DenseSparsityConfig(num_heads=4), max_seq_length=128)
    q, k, v = qkv()
    out_a, out_b = a(q, k, v), b(q, k, v)  # DeepSpeed's class-wide cache gave b a's layout
    assert_close(out_a, expected(a, q, k, v))
    assert_close(out_b, expected(b, q, k, v))
    assert not torch.allclose(out_a, out_b)
    op = a.get_ops(4, 64, q.device, q.dtype)
    assert a.get_ops(4, 64, q.device, q.dtype) is op
    assert a.get_ops(4, 64, q.device, torch.float16) is not op
    assert set(a._ops) >= {(64, torch.device("cpu"), torch.float32)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dtypes(dtype):
    m = SparseSelfAttention(fixed())
    q, k, v = qkv(dtype=dtype)
    out = m(q, k, v)
    assert out.dtype == dtype
    assert_close(out, expected(m, q, k, v), dtype)


def test_gradients_match_reference():
    m = SparseSelfAttention(fixed())
    q, k, v = qkv(grad=True)
    m(q, k, v).square().sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    expected(m, q, k, v).square().sum().backward()
    for g, t in zip(got, (q, k, v)):
        assert_close(g, t.grad)


def test_pretransposed_key_is_detected():
    m = SparseSelfAttention(fixed())
    q, k, v = qkv()
    assert torch.equal(m(q, k.transpose(2, 3), v), m(q, k, v))


# -- masks -----------------------------------------------------------------------------

def test_key_padding_mask_shapes_and_conventions():
    m = SparseSelfAttention(fixed())
    q, k, v = qkv()
    keep = torch.ones(2, 64, dtype=torch.bool)
    keep[1, 40:] = False
    additive = torch.zeros(2, 64).masked_fill(~keep, torch.finfo(torch.float32).min)
    ref = expected(m, q, k, v, key_padding_mask=keep)
    for mask in (keep, additive, additive[:, None, None, :], keep[:, None, None, :]):
        assert_close(m(q, k, v, key_padding_mask=mask), ref)
    mul = SparseSelfAttention(fixed(), key_padding_mask_mode="mul")
    assert_close(mul(q, k, v, key_padding_mask=keep.float()), ref)


def test_attn_mask_mul_mode_and_leading_dims():
    m = SparseSelfAttention(fixed())
    q, k, v = qkv()
    am = (torch.rand(64, 64, generator=torch.Generator().manual_seed(1)) < 0.8).float()
    am.fill_diagonal_(1)
    ref = expected(m, q, k, v, attn_mask=am)
    assert_close(m(q, k, v, attn_mask=am), ref)
    assert_close(m(q, k, v, attn_mask=am[None, None]), ref)


def test_rpe_is_added_without_gradient():
    m = SparseSelfAttention(fixed())
    q, k, v = qkv()
    rpe = torch.randn(1, 4, 64, 64, requires_grad=True)
    out = m(q, k, v, rpe=rpe)
    assert_close(out, expected(m, q, k, v, rpe=rpe.detach()))
    assert not out.requires_grad


# -- causal semantics ------------------------------------------------------------------

def test_causal_follows_the_config():
    assert SparseSelfAttention(LocalSlidingWindowSparsityConfig(num_heads=4), max_seq_length=128).causal
    assert not SparseSelfAttention(fixed(), max_seq_length=128).causal
    assert SparseSelfAttention(fixed(attention="unidirectional"), max_seq_length=128).causal
    assert not SparseSelfAttention(fixed(attention="unidirectional"), max_seq_length=128, causal=False).causal


def test_causal_false_reproduces_deepspeed_inside_diagonal_blocks():
    cfg = LocalSlidingWindowSparsityConfig(num_heads=4)
    q, k, v = qkv()
    strict = SparseSelfAttention(cfg, max_seq_length=128)
    deepspeed = SparseSelfAttention(cfg, max_seq_length=128, causal=False)
    # With causal masking, token t ignores later tokens: changing the last key leaves the rest alone.
    k2, v2 = k.clone(), v.clone()
    k2[:, :, -1] += 1
    v2[:, :, -1] += 1
    assert torch.allclose(strict(q, k, v)[:, :, :-1], strict(q, k2, v2)[:, :, :-1])
    # DeepSpeed's diagonal block is fully visible: the other tokens of the last block change.
    assert not torch.allclose(deepspeed(q, k, v)[:, :, -16:-1], deepspeed(q, k2, v2)[:, :, -16:-1])


# -- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("L,H,match", [
    (192, 4, r"sequence length 192 exceeds max_seq_length=128"),
    (72, 4, r"Sequence Length, 72, needs to be dividable by Block size 16"),
    (64, 3, r"input has 3 heads but sparsity_config.num_heads is 4"),
])
def test_shape_errors_name_the_values(L, H, match):
    m = SparseSelfAttention(fixed(), max_seq_length=128)
    q, k, v = qkv(H=H, L=L)
    with pytest.raises(ValueError, match=match):
        m(q, k, v)


def test_argument_errors():
    m = SparseSelfAttention(fixed())
    q, k, v = qkv()
    with pytest.raises(ValueError, match="float64"):
        m(q.double(), k.double(), v.double())
    with pytest.raises(ValueError, match="key has dtype"):
        m(q, k.half(), v)
    with pytest.raises(NotImplementedError, match="only self-attention"):
        m(q, k[:, :, :32], v[:, :, :32])
    with pytest.raises(ValueError, match="key_padding_mask must be"):
        m(q, k, v, key_padding_mask=torch.ones(2, 32))
    with pytest.raises(ValueError, match="attn_mask must be"):
        m(q, k, v, attn_mask=torch.ones(2, 1, 64, 64))
    with pytest.raises(ValueError, match="backend"):
        SparseSelfAttention(fixed(), backend="flash")
    with pytest.raises(ValueError, match="attn_mask_mode"):
        SparseSelfAttention(fixed(), attn_mask_mode="mult")


# -- state_dict and distributed --------------------------------------------------------

def bigbird(seed):
    random.seed(seed)
    return SparseSelfAttention(BigBirdSparsityConfig(num_heads=4, num_random_blocks=2, different_layout_per_head=True),
                               max_seq_length=256)


def test_state_dict_round_trip_keeps_the_layout_and_refreshes_ops():
    a, b = bigbird(0), bigbird(1)
    assert not torch.equal(a.master_layout, b.master_layout)
    q, k, v = qkv()
    b(q, k, v)  # fills b's op cache with its own layout
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.master_layout, a.master_layout)
    assert torch.equal(b(q, k, v), a(q, k, v))


def _distributed_worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        m = bigbird(seed=1000 + rank)
        before = m.master_layout.clone()
        m(*qkv(B=1, L=64))
        torch.save({"before": before, "after": m.master_layout.clone()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_distributed_ranks_end_with_rank0_layout(tmp_path):
    world = 2
    mp.spawn(_distributed_worker, args=(world, str(tmp_path / "init"), str(tmp_path)), nprocs=world, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(world))
    assert not torch.equal(r0["before"], r1["before"])
    assert torch.equal(r0["after"], r0["before"]) and torch.equal(r1["after"], r0["before"])


# -- the Triton kernels through the interpreter ----------------------------------------

def check_kernel_backends(device="cpu", dtypes=(torch.float32,), L=64, D=16):
    """Both backends, forward and backward, against the float64 reference (masks, causal)."""
    random.seed(0)
    configs = [FixedSparsityConfig(num_heads=2, num_local_blocks=2, different_layout_per_head=True,
                                   num_different_global_patterns=2),
               LocalSlidingWindowSparsityConfig(num_heads=2),
               BigBirdSparsityConfig(num_heads=2, num_random_blocks=1, different_layout_per_head=True)]
    for backend in BACKENDS:
        for cfg in configs:
            m = SparseSelfAttention(cfg, max_seq_length=2 * L, backend=backend).to(device)
            for dtype in dtypes:
                op = m.get_ops(2, L, torch.device(device), dtype)
                assert type(op).__name__ == ("_FusedOp" if backend == "fused" else "_ThreeOp")
                q, k, v = qkv(H=2, L=L, D=D, dtype=dtype, device=device, grad=True)
                keep = torch.ones(2, L, dtype=torch.bool, device=device)
                keep[1, L - 10:] = False
                am = torch.ones(L, L, device=device)
                am[3, :5] = 0
                out = m(q, k, v, key_padding_mask=keep, attn_mask=am)
                ref = expected(m, q, k, v, key_padding_mask=keep, attn_mask=am)
                dout = torch.randn_like(out)
                got = torch.autograd.grad(out, (q, k, v), dout)
                want = torch.autograd.grad(ref, (q, k, v), dout.double())
                assert out.dtype == dtype
                assert_close(out, ref, dtype)
                for g, w in zip(got, want):
                    assert_close(g, w, dtype, slack=2.0)  # gradients sum over L: looser


def test_kernel_backends_under_triton_interpreter():
    run = run_interpreted("tests.test_attention_module", "check_kernel_backends")
    assert run.returncode == 0, run.stderr[-3000:]


# -- GPU tier --------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_kernel_backends_match_reference():
    check_kernel_backends("cuda", (torch.float16, torch.bfloat16, torch.float32), L=256, D=64)


def check_three_op_causal(L=64, D=16):
    """The three-op backend, causal, through the interpreter: right answer, mask built once."""
    random.seed(0)
    m = SparseSelfAttention(FixedSparsityConfig(num_heads=2, num_local_blocks=2, attention="unidirectional"),
                            max_seq_length=2 * L, backend="three_op")
    assert m.causal
    op = m.get_ops(2, L, torch.device("cpu"), torch.float32)
    q, k, v = qkv(H=2, L=L, D=D)
    am = torch.ones(L, L)
    am[5, :3] = 0
    for kw in ({}, {"attn_mask": am}, {}):
        assert_close(m(q, k, v, **kw), expected(m, q, k, v, **kw), torch.float32)
        cached = op.causal_mask(L, q.device)
        assert op.causal_mask(L, q.device) is cached  # one (L, L) mask per op, reused by every call
    assert torch.equal(cached, torch.zeros(L, L).masked_fill(torch.ones(L, L, dtype=torch.bool).triu(1),
                                                             float("-inf")))


def test_three_op_causal_under_triton_interpreter():
    run = run_interpreted("tests.test_attention_module", "check_three_op_causal")
    assert run.returncode == 0, run.stderr[-3000:]


# -- torch.compile -----------------------------------------------------------------------

@pytest.mark.parametrize("device", [
    pytest.param("cpu", marks=pytest.mark.skipif(not interpreting(), reason="needs TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=pytest.mark.gpu)])
def test_compiled_module_matches_eager_and_reuses_its_layout(monkeypatch, device):
    """torch.compile(SparseSelfAttention) works from the first call (issue 11: it failed on a
    guard over the layout cache), matches eager forward and backward, compiles once, and every
    call hands the kernels the same layout object (so its cached index tables are reused)."""
    from sparsecli.kernels.fused import call as _attn_call

    layouts, graphs = [], []
    real = _attn_call._Plan  # looked up when a call runs: the spy sees every kernel call
    monkeypatch.setattr(_attn_call, "_Plan", lambda args, *rest: layouts.append(id(args.layout)) or real(args, *rest))
    torch._dynamo.reset()
    m = SparseSelfAttention(fixed(H=2), max_seq_length=128).to(device)
    compiled = torch.compile(m, backend=lambda gm, example: graphs.append(gm) or gm.forward)
    q, k, v = qkv(H=2, L=64, device=device, grad=True)
    for _ in range(3):
        out = compiled(q, k, v)
        got = torch.autograd.grad(out.sum(), (q, k, v))
    want = torch.autograd.grad(m(q, k, v).sum(), (q, k, v))
    assert torch.equal(out, m(q, k, v)) and all(torch.equal(a, b) for a, b in zip(got, want))
    assert len(graphs) == 1 and len(layouts) >= 3 and len(set(layouts)) == 1
