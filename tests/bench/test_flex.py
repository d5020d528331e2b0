"""FlexAttention's BlockMask from a layout: shapes it cannot take fail with a readable reason."""
import pytest
import torch

from sparsecli.bench import flex, providers


def test_seq_len_not_a_multiple_of_128_with_small_blocks_is_unsupported_with_a_reason():
    layout = torch.ones(2, 5, 5, dtype=torch.bool)  # S=160 at block 32: not whole 128-blocks
    with pytest.raises(ValueError) as e:
        flex.flex_block_mask(layout, 32, 160, device="cpu")
    status, reason = providers.classify(e.value)
    assert status == "unsupported"
    assert "seq_len a multiple of 128" in reason and "block-32" in reason and "160" in reason


def test_block_mask_at_small_blocks_covers_the_layout():
    layout = torch.zeros(2, 8, 8, dtype=torch.bool)  # S=256 at block 32: two 128-blocks a side
    layout[:, range(8), range(8)] = True
    layout[0, :4, :4] = True  # head 0: its first 128-block is full
    mask = flex.flex_block_mask(layout, 32, 256, device="cpu")
    dense = mask.to_dense()[0].bool()  # (H, 2, 2) 128-blocks computed
    assert dense[:, 0, 0].all() and dense[:, 1, 1].all() and not dense[:, 0, 1].any()
