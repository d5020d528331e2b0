"""fa4-sparse on the CPU: the block lists and dQ write order FA4 gets (exact tensors on small
layouts), and the provider end to end on a stand-in FA4 that computes what the lists say."""
import sys
import types
from typing import NamedTuple

import pytest
import torch

from sparsecli.bench import providers
from sparsecli.bench.fa4_sparse import block_lists, block_tensors, dq_write_order, fa4_layout
from sparsecli.kernels.reference import blocksparse_attention_reference

I32 = torch.int32
# Head 0: a row with two blocks, an empty row, a row whose blocks are not its diagonal.
SPARSE = [[1, 0, 1],
          [0, 0, 0],
          [1, 1, 0]]
DENSE = [[1, 1, 1]] * 3


def test_block_lists_pack_set_columns_left_in_order():
    counts, cols = block_lists(torch.tensor([SPARSE]))
    assert torch.equal(counts, torch.tensor([[2, 0, 2]], dtype=I32))
    assert torch.equal(cols, torch.tensor([[[0, 2], [0, 0], [0, 1]]], dtype=I32))
    assert cols.dtype == counts.dtype == I32


def test_lists_are_as_wide_as_the_longest_row_over_heads():
    counts, cols = block_lists(torch.tensor([SPARSE, DENSE]))
    assert torch.equal(counts, torch.tensor([[2, 0, 2], [3, 3, 3]], dtype=I32))
    assert torch.equal(cols[0], torch.tensor([[0, 2, 0], [0, 0, 0], [0, 1, 0]], dtype=I32))
    assert torch.equal(cols[1], torch.tensor([[0, 1, 2]] * 3, dtype=I32))


def test_an_empty_layout_gets_one_dummy_entry_per_row():
    counts, cols = block_lists(torch.zeros(1, 2, 2, dtype=torch.long))
    assert torch.equal(counts, torch.zeros(1, 2, dtype=I32)) and cols.shape == (1, 2, 1)


def test_dq_write_order_is_the_key_blocks_rank_in_its_query_row():
    lay = torch.tensor([SPARSE, DENSE])
    bc, bi = block_lists(lay.transpose(1, 2))
    # head 0, transposed: key block 0 <- query blocks 0, 2; key 1 <- 2; key 2 <- 0
    assert torch.equal(bc[0], torch.tensor([2, 1, 1], dtype=I32))
    assert torch.equal(bi[0], torch.tensor([[0, 2, 0], [2, 0, 0], [0, 0, 0]], dtype=I32))
    order = dq_write_order(lay, bc, bi)
    # key 0 is first in rows 0 and 2; key 1 second in row 2 ({0, 1}); key 2 second in row 0 ({0, 2})
    assert torch.equal(order[0], torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=I32))
    assert torch.equal(order[1], torch.tensor([[0, 0, 0], [1, 1, 1], [2, 2, 2]], dtype=I32))


def test_each_query_blocks_writers_get_ranks_0_to_n_minus_1_in_key_order():
    g = torch.Generator().manual_seed(3)
    lay = (torch.rand(4, 9, 9, generator=g) < 0.35).long()
    bc, bi = block_lists(lay.transpose(1, 2))
    order = dq_write_order(lay, bc, bi)
    for h in range(4):
        writers = {}
        for n in range(9):
            for i in range(int(bc[h, n])):
                writers.setdefault(int(bi[h, n, i]), []).append((n, int(order[h, n, i])))
        for m, got in writers.items():
            assert [rank for _, rank in sorted(got)] == list(range(int(lay[h, m].sum())))


def test_block_tensors_take_256_blocks_as_four_128_blocks():
    bt = block_tensors(torch.tensor([[1, 0], [0, 1]]), 256)
    assert torch.equal(fa4_layout(torch.tensor([[1, 0], [0, 1]]), 256)[0],
                       torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]]))
    assert bt.fwd_counts.shape == (1, 1, 4) and bt.fwd_cols.shape == (1, 1, 4, 2)
    assert torch.equal(bt.fwd_cols[0, 0], torch.tensor([[0, 1], [0, 1], [2, 3], [2, 3]], dtype=I32))
    assert torch.equal(bt.dq_order[0, 0], torch.tensor([[0, 0], [1, 1], [0, 0], [1, 1]], dtype=I32))
    with pytest.raises(ValueError, match="multiples of 128"):
        block_tensors(torch.ones(1, 2, 2), 64)


# -- the provider on a stand-in FA4 ------------------------------------------------------------

class FakeBST(NamedTuple):  # flash_attn.cute.block_sparsity.BlockSparseTensorsTorch's fields
    mask_block_cnt: torch.Tensor
    mask_block_idx: torch.Tensor
    full_block_cnt: torch.Tensor | None = None
    full_block_idx: torch.Tensor | None = None
    cu_total_m_blocks: torch.Tensor | None = None
    cu_block_idx_offsets: torch.Tensor | None = None
    block_size: tuple | None = None
    dq_write_order: torch.Tensor | None = None
    dq_write_order_full: torch.Tensor | None = None
    spt: bool | None = None


def lists_to_mask(cnt, idx, n_cols):
    """(B, H, R, n_cols) bool of count/index lists."""
    B, H, R, W = idx.shape
    out = torch.zeros(B, H, R, n_cols, dtype=torch.bool)
    for b, h, r in ((b, h, r) for b in range(B) for h in range(H) for r in range(R)):
        out[b, h, r, idx[b, h, r, :int(cnt[b, h, r])].long()] = True
    return out


@pytest.fixture
def fake_fa4_sparse(monkeypatch):
    """flash_attn.cute whose flash_attn_func attends exactly the forward's full blocks (128 each)."""
    calls = []

    def flash_attn_func(q, k, v, softmax_scale=None, deterministic=False, block_sparse_tensors=None,
                        block_sparse_tensors_bwd=None):
        fwd, bwd = block_sparse_tensors, block_sparse_tensors_bwd
        calls.append(dict(deterministic=deterministic, fwd=fwd, bwd=bwd, stride=q.stride(-1)))
        nb = q.shape[1] // 128
        assert int(fwd.mask_block_cnt.sum()) == 0 and int(bwd.mask_block_cnt.sum()) == 0  # no partial blocks
        mask = lists_to_mask(fwd.full_block_cnt, fwd.full_block_idx, nb)
        assert torch.equal(lists_to_mask(bwd.full_block_cnt, bwd.full_block_idx, nb), mask.transpose(2, 3))
        tok = mask.repeat_interleave(128, 2).repeat_interleave(128, 3)
        s = torch.einsum("bqhd,bkhd->bhqk", q, k) * softmax_scale
        p = torch.softmax(s.masked_fill(~tok, float("-inf")), -1).nan_to_num(0.0)
        return torch.einsum("bhqk,bkhd->bqhd", p, v), None

    cute = types.ModuleType("flash_attn.cute")
    cute.flash_attn_func = flash_attn_func
    bs = types.ModuleType("flash_attn.cute.block_sparsity")
    bs.BlockSparseTensorsTorch = FakeBST
    cute.block_sparsity = bs
    package = types.ModuleType("flash_attn")
    package.cute = cute
    for name, mod in (("flash_attn", package), ("flash_attn.cute", cute), ("flash_attn.cute.block_sparsity", bs)):
        monkeypatch.setitem(sys.modules, name, mod)
    return calls


@pytest.mark.parametrize("provider, deterministic", [("fa4-sparse", False), ("fa4-sparse-det", True)])
def test_fa4_sparse_attends_the_layout_and_orders_dq_when_deterministic(fake_fa4_sparse, provider, deterministic):
    g = torch.Generator().manual_seed(1)
    layout = torch.tensor([[[1, 0, 1], [0, 1, 0], [1, 1, 0]], [[0, 0, 1], [1, 1, 1], [0, 1, 0]]])
    q, k, v = (torch.randn(2, 2, 384, 16, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    fn = providers.setup(provider, providers.Ctx(layout, 128, False, 0.25, 384, 16, torch.bfloat16))
    out = fn(q, k, v)
    ref = blocksparse_attention_reference(q, k, v, layout, 128, sm_scale=0.25)
    assert out.shape == q.shape and (out - ref).abs().max() < 1e-10
    grads = torch.autograd.grad(out.sum(), (q, k, v))
    ref_grads = torch.autograd.grad(ref.sum(), (q, k, v))
    assert max((a - b).abs().max() for a, b in zip(grads, ref_grads)) < 1e-10
    call = fake_fa4_sparse[-1]
    assert call["deterministic"] is deterministic and call["stride"] == 1  # (B, S, H, D) views, no copy
    bwd = call["bwd"]
    assert bwd.spt is False and bwd.dq_write_order.shape == bwd.mask_block_idx.shape
    assert bwd.dq_write_order_full.shape == bwd.full_block_idx.shape and bwd.block_size == (128, 128)
    assert providers.uses_layout(provider)


def test_fa4_sparse_refuses_what_it_cannot_compute(fake_fa4_sparse):
    for ctx_kw, match in (({"causal": True}, "non-causal"), ({"block": 64}, "multiples of 128"),
                          ({"dtype": torch.float32}, "fp16 and bf16")):
        kw = dict(layout=torch.ones(1, 2, 2), block=128, causal=False, sm_scale=0.1, seq_len=256, head_dim=64,
                  dtype=torch.bfloat16)
        with pytest.raises(ValueError, match=match) as e:
            providers.setup("fa4-sparse", providers.Ctx(**{**kw, **ctx_kw}))
        assert providers.classify(e.value)[0] == "unsupported"


def test_rows_say_which_backward_ran(tiny_preset, fake_fa4_sparse, monkeypatch):
    from . import test_runner

    monkeypatch.setitem(test_runner.MS, "sparse-nondet", 0.5)  # the fake timer's time for it
    rows = test_runner.run(tiny_preset, ("sparse", "sparse-nondet"))
    for provider in ("sparse", "sparse-nondet"):
        assert rows[("fwd", provider)]["backward"] is None  # no backward in a forward row
        # CPU: the portable path, deterministic whatever was asked (only the Hopper kernels reduce-add dQ)
        assert rows[("fwd+bwd", provider)]["backward"] == "triton-deterministic"
        assert rows[("fwd+bwd", provider)]["status"] == "ok" and rows[("fwd+bwd", provider)]["check"] == "passed"
    ctx = providers.Ctx(torch.ones(1, 2, 2), 128, False, 0.1, 256, 64, torch.bfloat16)
    assert providers.backward_of("fa4-sparse-det", ctx, None, None, None) == "fa4-deterministic"
    assert providers.backward_of("fa4-sparse", ctx, None, None, None) == "fa4-dq-atomic"
