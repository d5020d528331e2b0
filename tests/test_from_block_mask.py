"""from_block_mask: a FlexAttention BlockMask back to (layout, block), the inverse of to_block_mask."""
import json

import pytest
import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask

import sparsecli
from sparsecli.modules.flex_mask import load_block_mask


def lists(bm):
    return bm.kv_num_blocks, bm.kv_indices, bm.full_kv_num_blocks, bm.full_kv_indices


def dense_tiles(num, idx):
    out = torch.zeros(*num.shape, idx.shape[-1], dtype=torch.bool)
    for pos in torch.cartesian_prod(*(torch.arange(n) for n in num.shape)).tolist():
        out[tuple(pos)][idx[tuple(pos)][:num[tuple(pos)]]] = True
    return out


def random_layout(heads, nb, seed):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(heads, nb, nb, generator=g) < 0.4) | torch.eye(nb, dtype=torch.bool)).long()


@pytest.mark.parametrize("causal", [False, True])
def test_round_trip_both_ways(causal):
    lay = random_layout(3, 6, seed=int(causal))
    bm = sparsecli.to_block_mask(lay, 128, causal=causal)
    back, block = sparsecli.from_block_mask(bm, causal=causal)
    want = lay & torch.ones(6, 6, dtype=torch.long).tril() if causal else lay
    assert block == 128 and torch.equal(back, want)
    again = sparsecli.to_block_mask(back, block, causal=causal)  # the same partial and full tiles
    for i in (0, 2):
        assert torch.equal(dense_tiles(*lists(again)[i:i + 2]), dense_tiles(*lists(bm)[i:i + 2]))
    assert bool(dense_tiles(*lists(bm)[0:2]).any()) == causal  # causal: partial diagonal tiles


def test_what_create_block_mask_builds_reads_back():
    def window(b, h, q, k):
        return (q // 128 - k // 128 <= 1) & (k // 128 <= q // 128)

    bm = create_block_mask(window, None, None, 512, 512, device="cpu")
    lay, block = sparsecli.from_block_mask(bm)
    want = torch.ones(4, 4, dtype=torch.long).tril() - torch.ones(4, 4, dtype=torch.long).tril(-2)
    assert block == 128 and torch.equal(lay, want[None])


def test_smaller_blocks_split_tiles_exactly():
    lay = random_layout(2, 3, seed=5)
    bm = sparsecli.to_block_mask(lay, 128)
    fine, block = sparsecli.from_block_mask(bm, 32)
    assert block == 32 and fine.shape == (2, 12, 12)
    assert torch.equal(fine, lay.repeat_interleave(4, 1).repeat_interleave(4, 2))
    with pytest.raises(ValueError, match="divide the BlockMask's 128-token tiles"):
        sparsecli.from_block_mask(bm, 96)


def test_partial_tiles_are_named():
    lay = torch.eye(8, dtype=torch.long)  # 32-blocks: each 128-tile on the diagonal holds 4 of its 16 blocks
    bm = sparsecli.to_block_mask(lay, 32)
    with pytest.raises(ValueError, match=r"partial tiles.*\(batch 0, head 0, query tile 0, key tile 0\), "
                                         r"\(batch 0, head 0, query tile 1, key tile 1\); if they are a causal"):
        sparsecli.from_block_mask(bm)
    off = sparsecli.to_block_mask(lay.roll(1, 1), 32)  # partial tiles off the diagonal: causal=True cannot help
    with pytest.raises(ValueError, match="query tile 1, key tile 0"):
        sparsecli.from_block_mask(off, causal=True)


def test_refusals():
    with pytest.raises(ValueError, match="takes a torch BlockMask"):
        sparsecli.from_block_mask(torch.ones(2, 2))
    bm = sparsecli.to_block_mask(torch.ones(2, 2), 128)
    rect = BlockMask.from_kv_blocks(*lists(bm), BLOCK_SIZE=(128, 64), seq_lengths=(256, 256))
    with pytest.raises(ValueError, match="a layout is square"):
        sparsecli.from_block_mask(rect)
    counts = torch.tensor([[[1, 1]], [[1, 2]]]).int()  # (B=2, H=1, rows): entry 1 has one more full tile
    indices = torch.tensor([[[[0, 1], [0, 1]]], [[[0, 1], [0, 1]]]]).int()
    two = BlockMask.from_kv_blocks(torch.zeros_like(counts), indices, counts, indices, BLOCK_SIZE=128,
                                   seq_lengths=(256, 256))
    with pytest.raises(ValueError, match="2 batch entries differ"):
        sparsecli.from_block_mask(two)


def test_saved_block_masks_load_without_their_code(tmp_path):
    lay = random_layout(2, 4, seed=7)
    bm = sparsecli.to_block_mask(lay, 128)
    path = tmp_path / "bm.pt"
    torch.save(BlockMask.from_kv_blocks(*lists(bm), BLOCK_SIZE=128, seq_lengths=(512, 512), mask_mod=keep_all), path)
    loaded = load_block_mask(path)
    assert loaded.mask_mod is not keep_all  # never imported from the file
    with pytest.raises(ValueError, match="loaded from a file without its mask_mod"):
        loaded.mask_mod(0, 0, 0, 0)
    assert torch.equal(sparsecli.from_block_mask(loaded)[0], lay)
    torch.save(lay, tmp_path / "layout.pt")
    assert load_block_mask(tmp_path / "layout.pt") is None


def test_layout_from_reads_a_saved_block_mask(tmp_path):
    from typer.testing import CliRunner

    from sparsecli.cli import app

    lay = random_layout(1, 4, seed=8)
    bm = sparsecli.to_block_mask(lay, 128)
    path = tmp_path / "bm.pt"
    torch.save(BlockMask.from_kv_blocks(*lists(bm), BLOCK_SIZE=128, seq_lengths=(512, 512)), path)
    result = CliRunner().invoke(app, ["layout", "--from", str(path), "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)["report"]
    assert (report["block"], report["nonzero_blocks"]) == (128, int(lay.sum()))  # the block from the file
    result = CliRunner().invoke(app, ["layout", "--from", str(path), "--block", "64", "--format", "json"])
    report = json.loads(result.output)["report"]
    assert (report["block"], report["nonzero_blocks"]) == (64, 4 * int(lay.sum()))
    causal = sparsecli.to_block_mask(lay, 128, causal=True)
    torch.save(BlockMask.from_kv_blocks(*lists(causal), BLOCK_SIZE=128, seq_lengths=(512, 512)), path)
    result = CliRunner().invoke(app, ["layout", "--from", str(path)])
    assert result.exit_code == 1 and "partial tiles" in str(result.exception)


def keep_all(b, h, q, k):
    return q >= 0


@pytest.mark.parametrize("seq_len,causal", [(200, False), (383, False), (200, True), (383, True)])
def test_a_sequence_that_ends_inside_a_tile_round_trips(seq_len, causal):
    """The last tiles are partial only because the sequence ends inside them: their tokens before
    the end are all kept, which the mask_mod says, so they read back as set blocks."""
    lay = random_layout(2, 3, seed=seq_len)
    bm = sparsecli.to_block_mask(lay, 128, seq_len, causal=causal)
    back, block = sparsecli.from_block_mask(bm, causal=causal)
    want = lay & torch.ones(3, 3, dtype=torch.long).tril() if causal else lay
    assert block == 128 and torch.equal(back, want[:, :back.shape[1], :back.shape[2]])
    assert back.shape[-1] == -(-seq_len // 128)


def test_create_block_mask_with_a_ragged_end_reads_back_dense():
    bm = create_block_mask(lambda b, h, q, k: q >= 0, None, None, 200, 200, device="cpu")
    back, block = sparsecli.from_block_mask(bm)
    assert block == 128 and torch.equal(back, torch.ones(1, 2, 2, dtype=torch.long))


def test_a_last_tile_its_mask_mod_cuts_before_the_end_is_still_partial():
    bm = create_block_mask(lambda b, h, q, k: k < 150, None, None, 200, 200, device="cpu")
    with pytest.raises(ValueError, match="key tile 1"):
        sparsecli.from_block_mask(bm)
