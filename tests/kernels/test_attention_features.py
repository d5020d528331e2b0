"""Issue-11 features of the fused kernels vs the float64 dense oracle: grouped-query attention,
Sq != Sk and ragged lengths (bottom-right causal, decode), head dims 8-256, packed sequences,
lse and its gradient.

CPU tier through Triton's interpreter (fp16/fp32), tiny shapes; GPU tier (``-m gpu``): the same
features on larger shapes in fp16 and bf16. Outputs are NaN-poisoned before the kernels write.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from sparsecli.kernels import blocksparse_attention
from sparsecli.kernels._checks import interpreting
from tests.kernels.oracle import check, make_layout, packed_segments, rand

F16, F32, BF16 = torch.float16, torch.float32, torch.bfloat16
cpu_kernels = pytest.mark.skipif(not interpreting(), reason="needs TRITON_INTERPRET=1 (set without CUDA)")
pytestmark = pytest.mark.usefixtures("poison")

# ---- CPU tier (interpreter) ------------------------------------------------------------------

GQA = [  # Hq, Hkv, causal, per-head layout, block, dtype: 2 and 4 query heads per K/V head, MQA
    (4, 2, False, True, 16, F16), (4, 2, True, False, 32, F32), (8, 2, True, True, 16, F16),
    (4, 1, False, False, 64, F16), (4, 1, True, True, 16, F32),
]


@cpu_kernels
@pytest.mark.parametrize("Hq,Hkv,causal,per_head,block,dtype", GQA)
def test_grouped_query_attention(Hq, Hkv, causal, per_head, block, dtype):
    check(2, Hq, 128, 16, block, dtype, Hkv=Hkv, causal=causal, per_head=per_head, lse=Hq == 8)


LENGTHS = [  # Sq, Sk, block, causal, Hkv (of 2 query heads)
    (48, 112, 16, True, 2), (112, 48, 16, True, 1), (112, 48, 32, False, 2), (100, 100, 32, False, 2),
    (100, 100, 16, True, 1), (1, 200, 32, True, 1), (1, 64, 64, False, 2), (5, 300, 16, True, 2),
    (70, 50, 64, True, 1),
]


@cpu_kernels
@pytest.mark.parametrize("Sq,Sk,block,causal,Hkv", LENGTHS)
def test_query_and_key_lengths(Sq, Sk, block, causal, Hkv):
    """Sq < Sk, Sq > Sk (causal: the first Sq - Sk queries see nothing), lengths that are not
    multiples of the block, Sq = 1 (decoding against a cache)."""
    check(2, 2, Sq, 16, block, F16, Hkv=Hkv, Sk=Sk, causal=causal, per_head=Sq % 2 == 0, lse=True)


HEAD_DIMS = [(8, 16, True, F16), (40, 32, False, F16), (96, 64, True, F32), (256, 16, True, F16),
             (24, 64, False, F32)]


@cpu_kernels
@pytest.mark.parametrize("D,block,causal,dtype", HEAD_DIMS)
def test_head_dims(D, block, causal, dtype):
    """Head dims that are not 16/32/64/128: tiles pad to a power of two, loads read zeros past D."""
    check(2, 2, 64 if D == 256 else 96, D, block, dtype, Hkv=1 if D % 16 else 2, causal=causal,
          per_head=True, lse=D == 96)


SEGMENTS = [  # block, causal, Hkv, S, mask kind, sorted ids
    (16, False, 2, 128, None, True), (16, True, 2, 128, None, True), (32, True, 1, 100, "kpm", True),
    (64, False, 1, 128, "am", True), (16, True, 2, 96, None, False),
]


@cpu_kernels
@pytest.mark.parametrize("block,causal,Hkv,S,mask,sort", SEGMENTS)
def test_packed_segments(block, causal, Hkv, S, mask, sort):
    """segment_ids with and without causal, with GQA, masks and ragged lengths; unsorted ids too
    (the tile filter is then only a superset, the kernels' element test does the rest)."""
    ids = packed_segments(2, S, 4, "cpu", sort=sort)
    check(2, 2, S, 16, block, F16, Hkv=Hkv, causal=causal, per_head=True, mask=mask,
          mode="add" if mask else None, segments=ids, lse=True)


@cpu_kernels
def test_lse_minus_inf_pattern():
    """lse is -inf exactly where a query attends nothing: an empty layout row, a fully padded
    batch element, queries before the first key under bottom-right causal (Sq > Sk)."""
    check(2, 2, 96, 16, 16, F16, Sk=64, causal=True, mask="kpm", mode="bool", lse=True, per_head=True)


def _live_tiles(sch, lay, block, ids):
    """Tiles of each (batch, row) holding a same-segment pair the layout keeps (brute force)."""
    S = ids.shape[1]
    want = lay.bool().repeat_interleave(block, -2).repeat_interleave(block, -1)[..., :S, :S]
    seg = sch.seg_start.long().view(-1, sch.nseg)
    out = []
    for b in range(ids.shape[0]):
        same = ids[b][:, None] == ids[b][None, :]
        for r in range(sch.num_rows):
            t0, t1 = int(sch.row_ptr[r]), int(sch.row_ptr[r + 1])
            rows = torch.arange(r % sch.num_outer * sch.outer, min(S, (r % sch.num_outer + 1) * sch.outer))
            n = 0
            for t in range(t0, t1):
                cols = torch.cat([torch.arange(s, min(S, s + sch.seg)) for s in seg[t].tolist()])
                n += bool((same[rows][:, cols] & want[r // sch.num_outer][rows][:, cols]).any())
            out.append(n)
    return out


@cpu_kernels
def test_segment_filter_keeps_exactly_the_tiles_with_shared_segments():
    """With sorted ids the launcher's per-batch lists hold exactly the tiles whose query and key
    tokens share a segment: packed documents cost what they cost, not the whole row."""
    from sparsecli.kernels.fused.segments import segment_lists
    from sparsecli.kernels.lut import tile_schedule

    S, block = 256, 16
    lay = torch.ones(1, S // block, S // block, dtype=torch.long)
    ids = packed_segments(2, S, 6, "cpu")
    sch = tile_schedule(lay, block, 32, 32, causal=False, transpose=False, num_heads=1)
    _, _, counts = segment_lists(sch, ids.to(torch.int32))
    assert counts[:, :, 1].flatten().tolist() == _live_tiles(sch, lay, block, ids)
    assert counts[:, :, 1].sum() < 2 * sch.num_tiles  # most of the dense layout is skipped


@cpu_kernels
def test_grouped_backward_is_deterministic():
    q = rand(1, 4, 96, 16, dtype=F16).requires_grad_()
    k, v = (rand(1, 1, 80, 16, dtype=F16).requires_grad_() for _ in range(2))
    lay = make_layout(4, 6, 5, block=16, q_len=96, k_len=80)
    grads = [torch.autograd.grad(blocksparse_attention(q, k, v, lay, 16, causal=True), (q, k, v),
                                 torch.ones(1, 4, 96, 16, dtype=F16)) for _ in range(2)]
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@cpu_kernels
def test_split_rows_with_groups_and_ragged_lengths(monkeypatch):
    from sparsecli.kernels.fused import plan as _attn_plan

    monkeypatch.setattr(_attn_plan, "MIN_SPLIT_TILES", 1)
    monkeypatch.setattr(_attn_plan, "_num_sms", lambda device: 10**6)
    check(2, 4, 100, 24, 16, F16, Hkv=2, Sk=150, causal=True, per_head=True, lse=True)


@cpu_kernels
@pytest.mark.parametrize("D,block,tma", [(96, 64, True), (48, 32, False), (192, 64, True)])
def test_head_dims_in_three_pieces(monkeypatch, D, block, tma):
    """Head dims of 3 * 2^k: the forward holds rows as three power-of-two pieces (no dot on
    padding), through TMA and pointer loads, ragged tiles, and split rows merged by the combine
    kernel (which keeps the padded width)."""
    from sparsecli.kernels.fused import plan as _attn_plan

    pieces, launch_of = [], _attn_plan._Static.launch_of

    def spy(self, which, cfg, sch):
        launch = launch_of(self, which, cfg, sch)
        pieces.append((which, launch.base.get("PIECES", 1), sch.num_split_rows if which == "fwd" else 0))
        return launch

    monkeypatch.setattr(_attn_plan._Static, "launch_of", spy)
    monkeypatch.setattr(_attn_plan, "MIN_SPLIT_TILES", 1)
    monkeypatch.setattr(_attn_plan, "_num_sms", lambda device: 10**6)
    if not tma:
        monkeypatch.setattr(_attn_plan, "_has_tma", lambda *xs: False)
    check(2, 2, 200, D, block, F16, Hkv=1, causal=True, per_head=True, lse=True, density=0.8)
    assert [p[:2] for p in pieces] == [("fwd", 3), ("dq", 1), ("dkdv", 1)] and pieces[0][2] > 0


@cpu_kernels
def test_d256_block_128_tiles():
    """D256 at block 128 runs 128-query forward tiles (8 warps on a GPU): ragged, GQA, causal."""
    check(1, 2, 200, 256, 128, F16, Hkv=1, causal=True, per_head=True, lse=True)


@cpu_kernels
def test_pointer_loads_with_padded_head_dim_and_ragged_tiles(monkeypatch):
    from sparsecli.kernels.fused import plan as _attn_plan

    monkeypatch.setattr(_attn_plan, "_has_tma", lambda *xs: False)
    check(2, 2, 70, 40, 64, F16, Hkv=1, Sk=90, causal=True, mask="rpe", mode="bh")


# ---- GPU tier --------------------------------------------------------------------------------

GPU_FEATURES = list(itertools.product(
    [(8, 2), (8, 1), (4, 4)],  # (Hq, Hkv)
    [(1024, 1024), (300, 700), (700, 300), (1, 4000)],  # (Sq, Sk)
    (F16, BF16)))


@pytest.mark.gpu
@pytest.mark.parametrize("heads,lengths,dtype", GPU_FEATURES)
def test_gpu_features(heads, lengths, dtype):
    i = GPU_FEATURES.index((heads, lengths, dtype))
    block, D = (16, 32, 64, 128)[i % 4], (64, 128, 96, 40, 256, 8)[i % 6]
    check(2, heads[0], lengths[0], D, block, dtype, Hkv=heads[1], Sk=lengths[1], causal=bool(i % 3),
          per_head=bool(i % 2), lse=True, device="cuda", density=0.3)


@pytest.mark.gpu
@pytest.mark.parametrize("block,D,dtype", list(itertools.product((16, 64, 128), (64, 128), (F16, BF16))))
def test_gpu_packed_segments(block, D, dtype):
    check(2, 4, 2048, D, block, dtype, Hkv=2, causal=block != 64, per_head=block == 16, lse=True,
          segments=packed_segments(2, 2048, 7, "cuda"), device="cuda", density=0.6)


@pytest.mark.gpu
@pytest.mark.parametrize("D,block", [(D, 64) for D in (8, 24, 40, 80, 96, 160, 192, 256)] + [(96, 128), (256, 128)])
@pytest.mark.parametrize("dtype", (F16, BF16))
def test_gpu_head_dims(D, block, dtype):
    check(1, 4, 512, D, block, dtype, Hkv=2, causal=True, per_head=True, device="cuda", density=0.4)
