"""LocalSlidingWindow: a purely local sliding window (unidirectional by default)."""
from __future__ import annotations

from .base import SparsityConfig, _int, band, check_fits


class LocalSlidingWindowSparsityConfig(SparsityConfig):
    """Row r attends to ``[r - w, r]`` (unidirectional) or ``[r - w, r + w]`` with
    ``w = num_sliding_window_blocks // 2``. As in DeepSpeed there is no ``different_layout_per_head``
    and any ``attention`` other than exactly 'bidirectional' is unidirectional.
    """

    kind = "local_sliding_window"
    per_head_argument = False

    def __init__(self, num_heads, block=16, num_sliding_window_blocks=3, attention="unidirectional"):
        super().__init__(num_heads, block)
        self.num_sliding_window_blocks = _int(num_sliding_window_blocks, "num_sliding_window_blocks", 0)
        self.attention = attention

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        check_fits(self.num_sliding_window_blocks, nb, "sliding window", "num_sliding_window_blocks")
        w = self.num_sliding_window_blocks // 2
        m = band(nb, w, w if self.attention == "bidirectional" else min(w, 0))
        return self._assemble(nb, lambda h: m)

    @property
    def unidirectional(self) -> bool:
        return self.attention != "bidirectional"  # DeepSpeed: any other string is unidirectional
