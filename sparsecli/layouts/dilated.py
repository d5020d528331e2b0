"""Dilated: the Sparse Transformer's strided pattern (a local band plus every stride-th block)."""
from __future__ import annotations

from .base import SparsityConfig, _int, check_attention


class DilatedSparsityConfig(SparsityConfig):
    """Query block ``i`` sees key block ``j`` when ``|i - j| < num_local_blocks`` or ``stride``
    divides ``i - j``; ``attention="unidirectional"`` keeps only ``j <= i``. Every head has the
    same layout.
    """

    kind = "dilated"
    per_head_argument = False

    def __init__(self, num_heads, block=16, num_local_blocks=4, stride=4, attention="bidirectional"):
        super().__init__(num_heads, block)
        self.num_local_blocks = _int(num_local_blocks, "num_local_blocks", 1)
        self.stride = _int(stride, "stride", 1)
        self.attention = check_attention(attention)

    def make_layout(self, seq_len):
        import torch

        nb = self.num_blocks(seq_len)
        idx = torch.arange(nb, dtype=torch.int32)
        d = idx[:, None] - idx[None, :]  # i - j
        m = (d.abs() < self.num_local_blocks) | (d % self.stride == 0)
        if self.unidirectional:
            m &= d >= 0
        return self._assemble(nb, lambda h: m)
