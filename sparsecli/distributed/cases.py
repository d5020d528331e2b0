"""The issue-18 measurement cases: 128k tokens in blocks of 128, 16 query heads over 4 KV heads
of 128, the five layouts a long-context model uses. Shared by the plan tests, the one-GPU
simulation (``scripts/cp_simulate.py``) and the multi-GPU benchmark (``scripts/cp_bench.py``).

Every kind takes its class defaults (DeepSpeed's, for BigBird and Fixed: one layout for every
head). ``bigbird_per_head`` is the bundled BigBird preset (``presets/bigbird.yaml``: a layout per
head, 3 random and 2 global blocks) at block 128, reported beside the five: its 16 heads x 3
random blocks per row reach nearly every key block from every rank, so no split can receive
less than a dense ring there. ``causal`` is the layout's own direction (the unidirectional kinds
run with the kernels' per-token causal mask).
"""
from __future__ import annotations

import random
from dataclasses import dataclass

SEQ_LEN, BLOCK, HEADS, KV_HEADS, HEAD_DIM = 131072, 128, 16, 4, 128
WORLD_SIZES = (2, 4, 8)


@dataclass(frozen=True)
class Case:
    name: str
    causal: bool

    def config(self, heads: int = HEADS, block: int = BLOCK):
        from .. import layouts as L

        if self.name == "bigbird":
            return L.BigBirdSparsityConfig(heads, block)
        if self.name == "bigbird_per_head":
            return L.BigBirdSparsityConfig(heads, block, different_layout_per_head=True, num_random_blocks=3,
                                           num_sliding_window_blocks=3, num_global_blocks=2)
        if self.name == "fixed":
            return L.FixedSparsityConfig(heads, block)
        if self.name == "sliding_window":
            return L.LocalSlidingWindowSparsityConfig(heads, block)
        if self.name == "causal_sliding_window":
            return L.CausalSlidingWindowSparsityConfig(heads, block)
        return L.StreamingSparsityConfig(heads, block)

    def layout(self, seq_len: int = SEQ_LEN, heads: int = HEADS, block: int = BLOCK, seed: int = 0):
        """The ``(heads, nb, nb)`` layout, drawn after ``random.seed(seed)`` as the CLI does."""
        random.seed(seed)
        return self.config(heads, block).make_layout(seq_len)


CASES = (Case("bigbird", False), Case("fixed", False), Case("sliding_window", True),
         Case("causal_sliding_window", True), Case("streaming", True))
EXTRA_CASES = (Case("bigbird_per_head", False),)


def add_case_arguments(parser) -> None:
    """The flags both measurement scripts take (``scripts/cp_simulate.py``, ``scripts/cp_bench.py``):
    which cases and strategies, and the shape they run at (the issue's by default)."""
    from .partition import STRATEGIES

    parser.add_argument("--cases", nargs="*", choices=[c.name for c in CASES + EXTRA_CASES],
                        default=[c.name for c in CASES])
    parser.add_argument("--strategies", nargs="*", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--seq", type=int, default=SEQ_LEN)
    parser.add_argument("--block", type=int, default=BLOCK)
    parser.add_argument("--heads", type=int, default=HEADS)
    parser.add_argument("--kv-heads", type=int, default=KV_HEADS)
    parser.add_argument("--head-dim", type=int, default=HEAD_DIM)
