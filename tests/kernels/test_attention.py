"""Fused block-sparse attention vs the float64 dense reference.

CPU tier: small shapes through Triton's interpreter (``tests/kernels/conftest.py`` sets
``TRITON_INTERPRET=1`` where CUDA is absent); the interpreter has no bf16 dot, so fp16 and fp32.
GPU tier (``-m gpu``): the full grid of block x D x dtype x causal x masks x per-head layouts.
Every check draws fresh random inputs and poisons the kernel's outputs before it writes them.
"""
from __future__ import annotations

import itertools
import os

import pytest
import torch

from sparsecli.kernels._checks import interpreting
from sparsecli.kernels import blocksparse_attention, blocksparse_attention_reference
from sparsecli.kernels.lut import tile_schedule

INTERPRET = interpreting()
cpu_kernels = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (set without CUDA)")

OUT_BOUND = {torch.float16: 5e-3, torch.bfloat16: 1.5e-2, torch.float32: 5e-3}
_GEN = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))


def _rand(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=_GEN, dtype=torch.float32).to(device=device, dtype=dtype)


def make_layout(H, nb, density=0.5, empty_row=True, device="cpu"):
    lay = (torch.rand(H, nb, nb, generator=_GEN) < density).long()
    lay[:, torch.arange(nb), torch.arange(nb)] = 1  # causal runs still have work on every row
    if empty_row:
        lay[:, nb // 2, :] = 0
    return lay.to(device)


def make_masks(kind, mode, B, H, S, device):
    """(kwargs, rows_fully_masked bool (B, S) or None) for one mask kind and mode."""
    kw, dead = {}, None
    if kind == "kpm":
        keep = torch.rand(B, S, generator=_GEN) < 0.7
        keep[-1] = False  # the last batch element has every key padded: all its rows are dead
        dead = torch.zeros(B, S, dtype=torch.bool)
        dead[-1] = True
        if mode == "bool":
            m = keep
        elif mode == "mul":
            m = keep.to(torch.float16)
        else:  # HF extended mask in one row, -inf elsewhere
            m = torch.where(keep, 0.0, -10000.0)
            m[-1] = float("-inf")
        kw = dict(key_padding_mask=m.to(device), key_padding_mask_mode="add" if mode == "add" else "mul")
    elif kind == "am":
        keep = torch.rand(S, S, generator=_GEN) < 0.8
        keep[3] = False  # query 3 sees nothing
        dead = torch.zeros(B, S, dtype=torch.bool)
        dead[:, 3] = True
        if mode == "bool":
            m = keep
        elif mode == "mul":
            m = keep.float() * _rand(S, S).abs().add(0.5)  # any non-zero keeps
        else:
            m = torch.where(keep, _rand(S, S), torch.tensor(float("-inf")))
        kw = dict(attn_mask=m.to(device), attn_mask_mode="add" if mode == "add" else "mul")
    elif kind == "rpe":
        shape = {"bh": (B, H), "h": (1, H), "b": (B, 1)}[mode]
        kw = dict(rpe=_rand(*shape, S, S).to(device))
    return kw, dead


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


def check(B, H, S, D, block, dtype, *, causal=False, per_head=False, mask=None, mode=None,
          device="cpu", density=0.5):
    lay = make_layout(H if per_head else 1, S // block, density, device=device)
    if not per_head and (B + S) % 2:
        lay = lay[0]  # 2-D layouts apply to every head
    kw, dead = make_masks(mask, mode, B, H, S, device)
    q, k, v = (_rand(B, H, S, D, dtype=dtype, device=device).requires_grad_() for _ in range(3))
    out = blocksparse_attention(q, k, v, lay, block, causal=causal, **kw)
    dout = _rand(B, H, S, D, dtype=dtype, device=device)
    out.backward(dout)

    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = blocksparse_attention_reference(q64, k64, v64, lay, block, causal=causal,
                                          compute_dtype=torch.float64, **kw)
    ref.backward(dout.double())
    bound = OUT_BOUND[dtype]
    for name, got, want, tol in (("out", out, ref, bound), ("dq", q.grad, q64.grad, 2 * bound),
                                 ("dk", k.grad, k64.grad, 2 * bound), ("dv", v.grad, v64.grad, 2 * bound)):
        assert torch.isfinite(got).all(), f"{name} has NaN/inf"
        err = rel(got, want)
        assert err <= tol, f"{name}: rel error {err:.2e} > {tol:.1e}"
    lay3 = torch.as_tensor(lay).bool().cpu().reshape(-1, S // block, S // block)
    empty_rows = (~lay3.any(-1)).repeat_interleave(block, 1).expand(H, S).to(device)
    assert (out.detach()[:, empty_rows] == 0).all() and (q.grad[:, empty_rows] == 0).all()
    if dead is not None:
        assert (out.detach().transpose(1, 2)[dead.to(device)] == 0).all()
        assert (q.grad.transpose(1, 2)[dead.to(device)] == 0).all()


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
    q, k, v = (_rand(1, 2, 128, 16, dtype=torch.float16).requires_grad_() for _ in range(3))
    lay = make_layout(2, 8)
    grads = []
    for _ in range(2):
        out = blocksparse_attention(q, k, v, lay, 16, causal=True)
        grads.append(torch.autograd.grad(out, (q, k, v), torch.ones_like(out)))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@cpu_kernels
def test_layout_mutation_invalidates_cache():
    q, k, v = (_rand(1, 1, 64, 16) for _ in range(3))
    lay = torch.ones(4, 4, dtype=torch.long)
    a = blocksparse_attention(q, k, v, lay, 16)
    lay[:, 1:] = 0
    b = blocksparse_attention(q, k, v, lay, 16)
    ref = blocksparse_attention_reference(q, k, v, lay, 16, compute_dtype=torch.float64)
    assert not torch.allclose(a, b)
    assert rel(b, ref) < 1e-4


def test_cpu_without_interpreter_runs_reference(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    q, k, v = (_rand(1, 2, 64, 16, dtype=torch.float16) for _ in range(3))
    lay = torch.tril(torch.ones(4, 4, dtype=torch.long))
    out = blocksparse_attention(q, k, v, lay, 16, causal=True)
    ref = blocksparse_attention_reference(q, k, v, lay, 16, causal=True, compute_dtype=torch.float64)
    assert out.dtype == torch.float16 and rel(out, ref) < 5e-3


@pytest.mark.parametrize("block,outer,inner,causal,transpose,split", [
    (16, 128, 64, False, False, None), (16, 128, 64, True, True, None), (32, 64, 128, True, False, 2),
    (128, 64, 64, True, False, None), (64, 128, 128, False, True, 3)])
def test_schedule_covers_layout_exactly(block, outer, inner, causal, transpose, split):
    """Rebuild the token mask from the programs' tiles and bits: it must equal the layout's."""
    H, nb = 2, 16
    S = nb * block
    lay = (torch.rand(H, nb, nb, generator=_GEN) < 0.3).long()
    lay[1, 3] = 1  # a global row: the heaviest program must come first
    sch = tile_schedule(lay, block, outer, inner, causal=causal, transpose=transpose, num_heads=H,
                        split=split)
    want = lay.bool().repeat_interleave(block, 1).repeat_interleave(block, 2)
    if causal:
        want &= torch.ones(S, S, dtype=torch.bool).tril()
    if transpose:
        want = want.transpose(1, 2)
    got = torch.zeros_like(want)
    seg, bits = sch.seg_start.long().view(-1, sch.nseg), sch.tile_bits
    work, slots = [], []
    for row, tb, tf, te, slot in sch.programs.view(-1, 5).tolist()[:sch.num_programs]:
        h, o = divmod(row, sch.num_outer)
        work.append(te - tb)
        slots.append(slot)
        assert split is None or te - tb <= split
        for t in range(tb, te):
            for g in range(outer // sch.unit):
                for s in range(sch.nseg):
                    if t < tf or (int(bits[t]) >> (g * sch.nseg + s)) & 1:
                        rows = slice(o * outer + g * sch.unit, o * outer + (g + 1) * sch.unit)
                        cols = slice(int(seg[t, s]), int(seg[t, s]) + sch.seg)
                        got[h, rows, cols] = True
    if causal:  # the kernel applies the element-level diagonal itself
        tri = torch.ones(S, S, dtype=torch.bool).tril()
        got &= tri.T if transpose else tri
    assert torch.equal(got, want)
    assert work == sorted(work, reverse=True)
    assert sorted(s for s in slots if s >= 0) == list(range(sch.num_slots))


def test_global_rows_run_first_and_split():
    lay = torch.eye(16, dtype=torch.long)
    lay[5] = 1  # a global row: 16 tiles where the others have 1
    sch = tile_schedule(lay, 64, 64, 64, causal=False, transpose=False, num_heads=2)
    assert sch.programs.view(-1, 5)[:2, 0].tolist() == [5, 16 + 5]
    sch = tile_schedule(lay, 64, 64, 64, causal=False, transpose=False, num_heads=2, split=4)
    assert sch.num_programs == 2 * (15 + 4) and sch.num_split_rows == 2 and sch.num_slots == 8
    assert sch.combine.view(-1, 3).tolist() == [[5, 0, 4], [21, 4, 4]]


@cpu_kernels
@pytest.mark.parametrize("causal,mask,mode", [(False, None, None), (True, "kpm", "add"), (False, "am", "mul")])
def test_split_rows(poison, monkeypatch, causal, mask, mode):
    """Force every multi-tile row to split into 1-tile programs merged by the combine kernel."""
    from sparsecli.kernels import attention

    monkeypatch.setattr(attention, "MIN_SPLIT_TILES", 1)
    monkeypatch.setattr(attention, "_num_sms", lambda device: 10**6)
    check(2, 2, 256, 32, 32, torch.float16, causal=causal, per_head=True, mask=mask, mode=mode)


BAD = [
    (dict(q=_rand(2, 64, 16)), "q"),
    (dict(q=_rand(1, 2, 64, 24), k=_rand(1, 2, 64, 24), v=_rand(1, 2, 64, 24)), "q head dim"),
    (dict(k=_rand(1, 2, 64, 16, dtype=torch.float64)), "k"),
    (dict(v=_rand(1, 2, 32, 16)), "v"),
    (dict(block=8), "block"),
    (dict(block=128), "block"),
    (dict(layout=torch.ones(3, 4, 4)), "layout"),
    (dict(layout=torch.full((4, 4), 2)), "layout"),
    (dict(key_padding_mask=torch.ones(1, 32)), "key_padding_mask"),
    (dict(key_padding_mask=torch.ones(1, 64), key_padding_mask_mode="max"), "key_padding_mask_mode"),
    (dict(attn_mask=torch.ones(64, 32)), "attn_mask"),
    (dict(attn_mask=torch.ones(64, 64), attn_mask_mode="sub"), "attn_mask_mode"),
    (dict(rpe=torch.ones(1, 3, 64, 64)), "rpe"),
    (dict(sm_scale="x"), "sm_scale"),
]


@pytest.mark.parametrize("override,word", BAD)
def test_invalid_arguments_name_the_argument(override, word):
    args = dict(q=_rand(1, 2, 64, 16), k=_rand(1, 2, 64, 16), v=_rand(1, 2, 64, 16),
                layout=torch.ones(4, 4), block=16)
    args.update(override)
    q, k, v, layout, block = (args.pop(n) for n in ("q", "k", "v", "layout", "block"))
    with pytest.raises(ValueError, match="^" + word):
        blocksparse_attention(q, k, v, layout, block, **args)


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
    q, k, v = (_rand(2, 4, 2048, 64, dtype=torch.bfloat16, device="cuda").requires_grad_() for _ in range(3))
    lay = make_layout(4, 64, 0.3, device="cuda")
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
    from sparsecli.kernels.attention import LONG_ROW_KEYS
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
    from sparsecli.kernels import attention

    monkeypatch.setattr(attention, "_has_tma", lambda *xs: False)
    check(2, 2, 256, 32, 64, torch.float16, causal=causal, per_head=True, mask="kpm", mode="add",
          device=device)


@cpu_kernels
@pytest.mark.parametrize("sm_scale", (-0.3, 0.0, 2.0))
def test_any_finite_scale(sm_scale):
    # A positive scale lets the forward take the row max on raw q k^T; others must not.
    B, H, S, D, block = 1, 2, 128, 16, 64
    lay = make_layout(H, S // block, 1.1, empty_row=False)
    q, k, v = (_rand(B, H, S, D, dtype=torch.float16) for _ in range(3))
    got = blocksparse_attention(q, k, v, lay, block, sm_scale=sm_scale)
    want = blocksparse_attention_reference(q.double(), k.double(), v.double(), lay, block,
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

    from sparsecli.kernels import attention

    default = attention.default_configs

    def flipped(*args, **kw):
        fwd, dkdv, dq = default(*args, **kw)
        return fwd, dataclasses.replace(dkdv, query_major=not dkdv.query_major), dq

    monkeypatch.setattr(attention, "default_configs", flipped)
    check(2, 2, 256, 32, block, torch.float16, causal=causal, per_head=True, mask=mask, mode=mode,
          device=device)
