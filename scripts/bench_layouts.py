"""Time make_layout for every kind at seq 65,536, block 16, 16 heads, different layouts per head.

    python scripts/bench_layouts.py          # prints one line per kind (target: < 2 s each)
"""
import random
import time

from sparsecli.layouts import (
    BigBirdSparsityConfig,
    BSLongformerSparsityConfig,
    DenseSparsityConfig,
    FixedSparsityConfig,
    LocalSlidingWindowSparsityConfig,
    VariableSparsityConfig,
)

CONFIGS = [
    DenseSparsityConfig(16, 16, True),
    FixedSparsityConfig(16, 16, True, num_different_global_patterns=4),
    VariableSparsityConfig(16, 16, True, num_random_blocks=2),
    BigBirdSparsityConfig(16, 16, True),
    BSLongformerSparsityConfig(16, 16, True),
    LocalSlidingWindowSparsityConfig(16, 16),  # has no different_layout_per_head
]

if __name__ == "__main__":
    for config in CONFIGS:
        random.seed(0)
        t0 = time.perf_counter()
        layout = config.make_layout(65536)
        elapsed = time.perf_counter() - t0
        print(f"{config.kind:22s} {elapsed:6.2f} s   shape {tuple(layout.shape)}  nnz {int(layout.sum())}")
        del layout
