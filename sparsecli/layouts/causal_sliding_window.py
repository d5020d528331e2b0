"""CausalSlidingWindow: the decoder sliding window of Mistral-style models, at block level."""
from __future__ import annotations

from .base import SparsityConfig, _int, band


class CausalSlidingWindowSparsityConfig(SparsityConfig):
    """Query block ``i`` sees key blocks ``i - num_window_blocks < j <= i``: itself and the
    ``num_window_blocks - 1`` blocks before it. Every head has the same layout. A window longer
    than the sequence is plain causal attention (a config outlives one sequence length).
    """

    kind = "causal_sliding_window"
    per_head_argument = False

    def __init__(self, num_heads, block=16, num_window_blocks=4):
        super().__init__(num_heads, block)
        self.num_window_blocks = _int(num_window_blocks, "num_window_blocks", 1)

    @property
    def unidirectional(self) -> bool:
        return True

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        m = band(nb, self.num_window_blocks - 1, 0)
        return self._assemble(nb, lambda h: m)
