"""Variable: Fixed extended with random blocks, a list of local window sizes and chosen global blocks."""
from __future__ import annotations

from .base import (
    SparsityConfig,
    _int,
    check_attention,
    check_fits,
    check_global_ranges,
    check_horizontal,
    fill_window,
    global_slices,
    ignored_global_notes,
    random_blocks,
)


class VariableSparsityConfig(SparsityConfig):
    """Random + local windows (sizes from ``local_window_blocks``, the last one repeated) + global blocks.

    Quirks kept from DeepSpeed: random blocks are drawn from the whole row even when
    unidirectional (future blocks); multi-block global ranges leak the future like Fixed; global
    blocks attend to everything only with ``horizontal_global_attention``.

    Difference: negative window sizes are ValueErrors (DeepSpeed's slices made them windows that
    wrap around or vanish).
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
        for w in local_window_blocks:
            _int(w, "each entry of local_window_blocks", 0)
        self.local_window_blocks = local_window_blocks
        self.global_block_indices = global_block_indices
        check_global_ranges(global_block_indices, global_block_end_indices)
        self.global_block_end_indices = global_block_end_indices
        self.attention = check_attention(attention)
        check_horizontal(attention, horizontal_global_attention)
        self.horizontal_global_attention = horizontal_global_attention

    def _local(self, m, uni: bool) -> None:
        import torch

        nb = m.shape[0]
        start = end = 0
        for w in self.local_window_blocks:
            end = min(end + w, nb)  # cumulative and clipped, as DeepSpeed keeps it
            fill_window(m, start, end, uni)
            start += w
        last = self.local_window_blocks[-1]
        if last == 0:
            raise ValueError("the last entry of local_window_blocks is repeated to tile the rest of the row; it must not be 0")
        if start >= nb:
            return
        idx = torch.arange(nb)
        tail = idx >= start
        window = torch.where(tail, (idx - start) // last, -1)
        same = (window[:, None] == window[None, :]) & tail[:, None]
        if uni:
            same &= idx[None, :] <= idx[:, None]
        m |= same

    def _global(self, m, uni: bool) -> None:
        for s, e in global_slices(self.global_block_indices, self.global_block_end_indices, m.shape[0]):
            if self.horizontal_global_attention:
                m[s:e, :] = True
            m[(s if uni else 0):, s:e] = True

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        uni = self.attention == "unidirectional"
        check_fits(self.num_random_blocks, nb, "random", "num_random_blocks")
        import torch

        fixed = torch.zeros(nb, nb, dtype=torch.bool)
        self._local(fixed, uni)
        self._global(fixed, uni)

        def head(h):
            m = fixed.clone()
            random_blocks(m, self.num_random_blocks, causal=False)
            return m

        return self._assemble(nb, head)

    def layout_notes(self, seq_len) -> list[str]:
        return ignored_global_notes(self.global_block_indices, self.global_block_end_indices, self.num_blocks(seq_len))
