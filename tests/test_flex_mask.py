"""to_block_mask: FlexAttention computes exactly the layout's attention, visiting only its tiles."""
import pytest
import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention, noop_mask

import sparsecli
from sparsecli.modules.flex_mask import FLEX_BLOCK, to_block_mask
from sparsecli.kernels.reference import blocksparse_attention_reference, token_mask

torch.nn.attention.flex_attention._FLEX_ATTENTION_DISABLE_COMPILE_DEBUG = True  # eager on purpose


def random_layout(heads, nb, block, gen):
    """Empty, partial and full 128-tiles: random blocks plus one fully set tile per head."""
    lay = torch.rand(heads, nb, nb, generator=gen) < 0.35
    r = FLEX_BLOCK // block
    for h in range(heads):
        t = (h % max(1, nb // r)) * r
        lay[h, t:t + r, t:t + r] = True
    lay[:, -1] = False  # a query block with nothing to attend: zeros, not NaN
    return lay.long()


def implied_token_mask(bm, seq_len):
    """What a backend honouring the tile lists computes: full tiles whole, partial tiles through
    the mask_mod, every other tile skipped (eager flex_attention consults only the mask_mod)."""
    n = bm.kv_num_blocks.shape[-1]
    H = bm.kv_num_blocks.shape[1]
    q = torch.arange(n * FLEX_BLOCK)
    keep = torch.zeros(H, n * FLEX_BLOCK, n * FLEX_BLOCK, dtype=torch.bool)
    for h in range(H):
        mod = bm.mask_mod(0, torch.tensor(h), q[:, None], q[None, :])
        for num, idx, whole in ((bm.kv_num_blocks, bm.kv_indices, False),
                                (bm.full_kv_num_blocks, bm.full_kv_indices, True)):
            for i in range(n):
                for j in idx[0, h, i, :num[0, h, i]].tolist():
                    rows, cols = slice(i * FLEX_BLOCK, (i + 1) * FLEX_BLOCK), slice(j * FLEX_BLOCK, (j + 1) * FLEX_BLOCK)
                    keep[h, rows, cols] = True if whole else mod[rows, cols]
    return keep[:, :seq_len, :seq_len]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("block", [16, 32, 64, 128])
def test_flex_attention_matches_the_reference(block, causal):
    # Forward only: flex_attention has no CPU backward (the bench checks gradients on the GPU).
    gen = torch.Generator().manual_seed(block + causal)
    S, H, D = 512, 2, 16
    layout = random_layout(H, S // block, block, gen)
    bm = to_block_mask(layout, block, causal=causal)
    q, k, v = (torch.randn(1, H, S, D, generator=gen, dtype=torch.float64) for _ in range(3))
    out = flex_attention(q, k, v, block_mask=bm, scale=0.3)
    ref = blocksparse_attention_reference(q, k, v, layout, block, causal=causal, sm_scale=0.3)
    assert (out - ref).abs().max() < 1e-10
    assert torch.equal(implied_token_mask(bm, S), token_mask(layout, block, causal))


@pytest.mark.parametrize("block, seq_len", [(32, 288), (16, 200), (128, 384), (64, 130)])
def test_tile_lists_are_create_block_masks_and_only_the_layouts(block, seq_len):
    gen = torch.Generator().manual_seed(seq_len)
    nb = -(-seq_len // block)
    layout = random_layout(3, nb, block, gen)
    for causal in (False, True):
        bm = to_block_mask(layout, block, seq_len, causal=causal)
        want = create_block_mask(bm.mask_mod, 1, 3, seq_len, seq_len, device="cpu")
        for mine, theirs in ((bm.kv_num_blocks, want.kv_num_blocks), (bm.full_kv_num_blocks, want.full_kv_num_blocks)):
            assert torch.equal(mine, theirs)
        assert torch.equal(bm.to_dense(), want.to_dense())
        assert torch.equal(implied_token_mask(bm, seq_len), token_mask(layout, block, causal)[:, :seq_len, :seq_len])
        # A sequence that ends inside a block is the layout's top-left corner: later keys do not exist.
        q, k, v = (torch.randn(1, 3, seq_len, 16, generator=gen, dtype=torch.float64) for _ in range(3))
        keep = token_mask(layout, block, causal)[:, :seq_len, :seq_len]
        scores = (q @ k.transpose(-1, -2)) * 16 ** -0.5
        probs = torch.softmax(scores.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)
        assert (flex_attention(q, k, v, block_mask=bm) - probs @ v).abs().max() < 1e-10


def test_sparsity_is_kept_and_the_mask_mod_is_never_trivial():
    layout = torch.zeros(1, 8, 8, dtype=torch.long)  # block 128: one tile per block
    layout[0, range(8), range(8)] = 1
    layout[0, 0, :] = 1
    bm = to_block_mask(layout, 128)
    assert int(bm.full_kv_num_blocks.sum()) == int(layout.sum()) and int(bm.kv_num_blocks.sum()) == 0
    assert bm.mask_mod is not noop_mask and bm.BLOCK_SIZE == (128, 128)  # pytorch#188322
    dense = to_block_mask(torch.ones(4, 4), 32, causal=True)  # 2-D layouts broadcast over heads
    assert dense.kv_num_blocks.shape == (1, 1, 1) and dense.sparsity() == 0.0


@pytest.mark.parametrize("args, kw, match", [
    ((torch.ones(2, 4, 4), 48), {}, "block must be the layout's block size, one of 16, 32, 64, 128; got 48"),
    ((torch.ones(2, 4, 5), 32), {}, r"layout must be \(heads, nb, nb\) or \(nb, nb\).*\(2, 4, 5\)"),
    ((torch.ones(4), 32), {}, "layout must be"),
    ((torch.full((4, 4), 2), 32), {}, "0/1"),
    ((torch.full((4, 4), 0.5), 32), {}, "0/1"),
    ((torch.ones(4, 4), 32, 129), {}, r"seq_len must be an int in 1\.\.128 .*got 129"),
    ((torch.ones(4, 4), 32, 0), {}, "seq_len must be"),
])
def test_bad_arguments_are_value_errors_naming_the_fix(args, kw, match):
    with pytest.raises(ValueError, match=match):
        to_block_mask(*args, **kw)


def test_exported_lazily_from_the_package():
    assert sparsecli.to_block_mask is to_block_mask and "to_block_mask" in dir(sparsecli)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", ["TRITON", "FLASH"])
@pytest.mark.parametrize("block", [16, 32, 64, 128])
def test_compiled_flex_backends_on_the_gpu_match_the_reference(block, backend, causal):
    """What the bench's flex and flex-flash rows run: compiled Flex, pinned backend, bf16, D64."""
    from sparsecli.bench.flex import flex_attention_call
    from sparsecli.bench.providers import Unavailable, flash_attn_4

    if backend == "FLASH":
        try:
            flash_attn_4()
        except Unavailable as e:
            pytest.skip(f"needs flash-attn-4 for the FLASH backend: {e}")
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    gen = torch.Generator().manual_seed(block * 2 + causal)
    S, H, D = 1024, 4, 64
    layout = random_layout(H, S // block, block, gen)
    q, k, v = (torch.randn(2, H, S, D, generator=gen, dtype=torch.float64) for _ in range(3))
    bm = to_block_mask(layout, block, causal=causal, device="cuda")
    out = flex_attention_call(*(t.to("cuda", torch.bfloat16) for t in (q, k, v)), bm, 0.125, backend)
    ref = blocksparse_attention_reference(q, k, v, layout, block, causal=causal, sm_scale=0.125)
    err = (out.double().cpu() - ref).abs().max() / ref.abs().max()
    assert err < 2e-2, f"{backend} block {block}: relative error {err:.3g} (dense attention would give ~0.9)"
