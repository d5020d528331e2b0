"""Variable: Fixed extended with random blocks, a list of local window sizes and chosen global blocks."""
from __future__ import annotations

import torch

from .base import (
    SparsityConfig,
    _int,
    check_attention,
    check_fits,
    check_global_ranges,
    check_horizontal,
    fill_window,
    random_blocks,
    wrap_index,
)


class VariableSparsityConfig(SparsityConfig):
    """Random + local windows (sizes from ``local_window_blocks``, the last one repeated) + global blocks.

    Quirks kept from DeepSpeed: random blocks are drawn from the whole row even when
    unidirectional (future blocks); multi-block global ranges leak the future like Fixed; global
    blocks attend to everything only with ``horizontal_global_attention``.
    """

    kind = "variable"

    def __init__(
        self,
        num_heads,
        block=16,
        different_layout_per_head=False,
        num_random_blocks=0,
        local_window_blocks=[4],  # noqa: B006 - DeepSpeed's signature; never mutated
        global_block_indices=[0],  # noqa: B006
        global_block_end_indices=None,
        attention="bidirectional",
        horizontal_global_attention=False,
    ):
        super().__init__(num_heads, block, different_layout_per_head)
        self.num_random_blocks = _int(num_random_blocks, "num_random_blocks", 0)
        if len(local_window_blocks) == 0:  # DeepSpeed crashes (UnboundLocalError) in make_layout
            raise ValueError("local_window_blocks must list at least one window size, e.g. [4]")
        self.local_window_blocks = local_window_blocks
        self.global_block_indices = global_block_indices
        check_global_ranges(global_block_indices, global_block_end_indices)
        self.global_block_end_indices = global_block_end_indices
        self.attention = check_attention(attention)
        check_horizontal(attention, horizontal_global_attention)
        self.horizontal_global_attention = horizontal_global_attention

    def _local(self, m: torch.Tensor, uni: bool) -> None:
        nb = m.shape[0]
        start = end = 0
        for w in self.local_window_blocks:
            end = min(end + w, nb)  # cumulative and clipped, as DeepSpeed keeps it
            fill_window(m, start, end, uni)
            start += w
        last = self.local_window_blocks[-1]
        if last == 0:
            raise ValueError("the last entry of local_window_blocks is repeated to tile the rest of the row; it must not be 0")
        if last < 0 or start >= nb:
            return
        while start < 0:  # windows reaching below 0 wrap, like DeepSpeed's element writes
            fill_window(m, start, min(start + last, nb), uni)
            start += last
        idx = torch.arange(nb)
        tail = idx >= start
        window = torch.where(tail, (idx - start) // last, -1)
        same = (window[:, None] == window[None, :]) & tail[:, None]
        if uni:
            same &= idx[None, :] <= idx[:, None]
        m |= same

    def _global(self, m: torch.Tensor, uni: bool) -> None:
        nb = m.shape[0]
        horizontal = self.horizontal_global_attention
        if self.global_block_end_indices is None:
            for idx in self.global_block_indices:
                if idx < nb:
                    idx = wrap_index(idx, nb, "global_block_indices")
                    if horizontal:
                        m[idx, :] = True
                    m[(idx if uni else 0):, idx] = True
        else:
            for s, e in zip(self.global_block_indices, self.global_block_end_indices):
                if s < nb:
                    e = min(e, nb)
                    if horizontal:
                        m[s:e, :] = True
                    m[(s if uni else 0):, s:e] = True

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        uni = self.attention == "unidirectional"
        check_fits(self.num_random_blocks, nb, "random", "num_random_blocks")
        fixed = torch.zeros(nb, nb, dtype=torch.bool)
        self._local(fixed, uni)
        self._global(fixed, uni)

        def head(h):
            m = fixed.clone()
            random_blocks(m, self.num_random_blocks, causal=False)
            return m

        return self._assemble(nb, head)
