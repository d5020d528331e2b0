"""The layout blocks and head dims the attention kernels take: one rule, read by the kernels'
own argument checks and by everything that plans a call before any tensor exists (``bench``
sweeps, presets, the layout report, ``sparsecli info``).

No torch import here: ``sparsecli presets`` validates a preset's head dims without loading torch.
"""
from __future__ import annotations

BLOCKS = (16, 32, 64, 128)
MAX_HEAD_DIM = 256
# Any multiple of 8 up to 256: the tiles pad it to a power of two (fused/plan.py).
HEAD_DIM_RULE = f"a multiple of 8 from 8 to {MAX_HEAD_DIM}"


def takes_head_dim(head_dim: int) -> bool:
    """Whether the fused kernels (and so ``blocksparse_attention``) take this head dim."""
    return isinstance(head_dim, int) and not isinstance(head_dim, bool) and head_dim % 8 == 0 \
        and 8 <= head_dim <= MAX_HEAD_DIM
