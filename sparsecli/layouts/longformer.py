"""BSLongformer: block-sparse Longformer (sliding window + global blocks in both directions)."""
from __future__ import annotations

from .base import SparsityConfig, _int, band, check_fits, check_global_ranges, global_slices, ignored_global_notes


class BSLongformerSparsityConfig(SparsityConfig):
    """Sliding window plus global rows and columns at ``global_block_indices`` (or ranges up to
    ``global_block_end_indices``). As in DeepSpeed, ``attention`` is not validated: anything other
    than 'unidirectional' is bidirectional.
    """

    kind = "bslongformer"

    def __init__(
        self,
        num_heads,
        block=16,
        different_layout_per_head=False,
        num_sliding_window_blocks=3,
        global_block_indices=[0],  # noqa: B006 - DeepSpeed's signature; never mutated
        global_block_end_indices=None,
        attention="bidirectional",
    ):
        super().__init__(num_heads, block, different_layout_per_head)
        self.num_sliding_window_blocks = _int(num_sliding_window_blocks, "num_sliding_window_blocks", 0)
        self.global_block_indices = global_block_indices
        self.attention = attention
        check_global_ranges(global_block_indices, global_block_end_indices)
        self.global_block_end_indices = global_block_end_indices

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        check_fits(self.num_sliding_window_blocks, nb, "sliding window", "num_sliding_window_blocks")
        w = self.num_sliding_window_blocks // 2
        m = band(nb, w, w)
        for s, e in global_slices(self.global_block_indices, self.global_block_end_indices, nb):
            m[s:e, :] = True
            m[:, s:e] = True
        if self.attention == "unidirectional":
            m = m.tril()
        return self._assemble(nb, lambda h: m)

    def layout_notes(self, seq_len) -> list[str]:
        return ignored_global_notes(self.global_block_indices, self.global_block_end_indices, self.num_blocks(seq_len))
