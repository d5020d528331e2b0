"""BigBird: random blocks + a sliding window + the first blocks as global (ITC)."""
from __future__ import annotations

from .base import SparsityConfig, _int, band, check_attention, check_fits, random_blocks


class BigBirdSparsityConfig(SparsityConfig):
    """BigBird ITC. The window covers ``num_sliding_window_blocks // 2`` blocks each side (an even
    count behaves like the next odd one, as in DeepSpeed). Unidirectional keeps the lower triangle.

    Differences from DeepSpeed: unidirectional with ``num_random_blocks >= 2`` cannot sample row 0
    (its causal population is one block); DeepSpeed crashes in ``random.sample``, this raises a
    ValueError at construction. Negative window or global counts are ValueErrors (DeepSpeed slices
    with them: ``num_global_blocks=-2`` made the layout dense).
    """

    kind = "bigbird"

    def __init__(
        self,
        num_heads,
        block=16,
        different_layout_per_head=False,
        num_random_blocks=1,
        num_sliding_window_blocks=3,
        num_global_blocks=1,
        attention="bidirectional",
    ):
        super().__init__(num_heads, block, different_layout_per_head)
        self.num_random_blocks = _int(num_random_blocks, "num_random_blocks", 0)
        # Negative sizes are errors (DeepSpeed built a dense or window-less layout from them).
        self.num_sliding_window_blocks = _int(num_sliding_window_blocks, "num_sliding_window_blocks", 0)
        self.num_global_blocks = _int(num_global_blocks, "num_global_blocks", 0)
        self.attention = check_attention(attention)
        if attention == "unidirectional" and self.num_random_blocks > 1:
            raise ValueError(
                f"unidirectional BigBird draws random blocks among the blocks at or before each row, and row 0 "
                f"has only one: num_random_blocks={self.num_random_blocks} cannot be sampled. Use 0 or 1."
            )

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        uni = self.attention == "unidirectional"
        check_fits(self.num_random_blocks, nb, "random", "num_random_blocks")
        check_fits(self.num_sliding_window_blocks, nb, "sliding window", "num_sliding_window_blocks")
        check_fits(self.num_global_blocks, nb, "global", "num_global_blocks")
        w = self.num_sliding_window_blocks // 2
        fixed = band(nb, w, w)
        ng = self.num_global_blocks
        fixed[0:ng, :] = True
        fixed[:, 0:ng] = True
        if uni:
            fixed = fixed.tril()

        def head(h):
            m = fixed.clone()
            random_blocks(m, self.num_random_blocks, causal=uni)
            return m

        return self._assemble(nb, head)
