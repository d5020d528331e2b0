"""Fixed: the Sparse Transformer "fixed" pattern (local windows + global summary blocks)."""
from __future__ import annotations

from .base import SparsityConfig, _int, check_attention, check_horizontal


class FixedSparsityConfig(SparsityConfig):
    """Local windows of ``num_local_blocks``; the last ``num_global_blocks`` of each window are global.

    Quirk kept from DeepSpeed: with ``attention='unidirectional'`` and ``num_global_blocks > 1`` the
    vertical global strip starts at its own first row, so rows inside the strip see the strip's
    later blocks (future tokens). ``sparsecli layout`` reports such blocks.
    """

    kind = "fixed"

    def __init__(
        self,
        num_heads,
        block=16,
        different_layout_per_head=False,
        num_local_blocks=4,
        num_global_blocks=1,
        attention="bidirectional",
        horizontal_global_attention=False,
        num_different_global_patterns=1,
    ):
        super().__init__(num_heads, block, different_layout_per_head)
        self.num_local_blocks = _int(num_local_blocks, "num_local_blocks", 1)
        ng = _int(num_global_blocks, "num_global_blocks")
        if ng < 1:  # DeepSpeed divides by it (ZeroDivisionError)
            raise ValueError(f"num_global_blocks must be >= 1, got {ng}; use 1 for one global block per window")
        if self.num_local_blocks % ng != 0:
            raise ValueError(
                f"Number of blocks in a local window, {self.num_local_blocks}, must be dividable by number of "
                f"global blocks, {ng}! Pick num_global_blocks among the divisors of {self.num_local_blocks}."
            )
        self.num_global_blocks = ng
        self.attention = check_attention(attention)
        check_horizontal(attention, horizontal_global_attention)
        self.horizontal_global_attention = horizontal_global_attention
        patterns = _int(num_different_global_patterns, "num_different_global_patterns", 1)
        if patterns > 1 and not different_layout_per_head:
            raise ValueError(
                "Number of different layouts cannot be more than one when you have set a single layout for all "
                "heads! Set different_layout_per_head to True."
            )
        limit = self.num_local_blocks // ng
        if patterns > limit:
            raise ValueError(
                f"Number of layout versions (num_different_global_patterns), {patterns}, cannot be larger than "
                f"number of local window blocks divided by number of global blocks, {self.num_local_blocks} / {ng} "
                f"= {limit}! Use at most {limit}."
            )
        self.num_different_global_patterns = patterns

    def _head(self, nb: int, pattern: int):
        import torch

        nl, ng = self.num_local_blocks, self.num_global_blocks
        uni = self.attention == "unidirectional"
        idx = torch.arange(nb)
        window = idx // nl
        m = window[:, None] == window[None, :]
        if uni:
            m &= idx[None, :] <= idx[:, None]

        g0 = nl - (1 + pattern) * ng  # >= 0: the pattern limit keeps the strip inside the window
        full_end = nb - nb % nl
        offset = idx % nl
        strip = (idx < full_end) & (offset >= g0) & (offset < g0 + ng)
        if uni:  # vertical strip from its own first row (DeepSpeed's future leak for ng > 1)
            first_row = idx - offset + g0
            m |= strip[None, :] & (idx[:, None] >= first_row[None, :])
        else:
            m[:, strip] = True
        if self.horizontal_global_attention:
            m[strip, :] = True

        if full_end < nb:  # short last window: Python slicing, negative starts included
            s = min(full_end + g0, nb - ng)
            e = s + ng
            m[(0 if not uni else s):, s:e] = True
            if self.horizontal_global_attention:
                m[s:e, :] = True
        return m

    def make_layout(self, seq_len):
        nb = self.num_blocks(seq_len)
        patterns = {}

        def head(h):
            p = h % self.num_different_global_patterns
            if p not in patterns:
                patterns[p] = self._head(nb, p)
            return patterns[p]

        return self._assemble(nb, head)
