"""Streaming: attention sinks plus a causal sliding window (StreamingLLM)."""
from __future__ import annotations

from .base import SparsityConfig, _int, band


class StreamingSparsityConfig(SparsityConfig):
    """Query block ``i`` sees key block ``j <= i`` when ``j`` is one of the first
    ``num_sink_blocks`` (the sinks) or ``j > i - num_window_blocks`` (the window). Every head has
    the same layout.
    """

    kind = "streaming"
    per_head_argument = False

    def __init__(self, num_heads, block=16, num_sink_blocks=1, num_window_blocks=4):
        super().__init__(num_heads, block)
        self.num_sink_blocks = _int(num_sink_blocks, "num_sink_blocks", 1)
        self.num_window_blocks = _int(num_window_blocks, "num_window_blocks", 1)

    @property
    def unidirectional(self) -> bool:
        return True

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        m = band(nb, self.num_window_blocks - 1, 0)
        m[:, : self.num_sink_blocks] = True
        m = m.tril()
        return self._assemble(nb, lambda h: m)
