"""Dense: every block present (DeepSpeed keeps it for comparison)."""
from __future__ import annotations

from .base import SparsityConfig


class DenseSparsityConfig(SparsityConfig):
    """All blocks attend to all blocks."""

    kind = "dense"

    def __init__(self, num_heads, block=16, different_layout_per_head=False):
        super().__init__(num_heads, block, different_layout_per_head)

    def make_layout(self, seq_len):
        import torch

        nb = self.num_blocks(seq_len)
        return torch.ones((self.num_heads, nb, nb), dtype=torch.int64)
