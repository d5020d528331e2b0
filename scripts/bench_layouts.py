"""Time make_layout for every kind at seq 65,536, block 16, 16 heads, different layouts per head.

Each timing runs in a fresh process (the 2 GiB result's first-touch cost depends on how fast the
OS hands out pages, which a warm process hides), three times per kind; prints min / median / max.

    python scripts/bench_layouts.py          # target: < 2 s per kind
"""
import statistics
import subprocess
import sys

CONFIGS = {
    "dense": "DenseSparsityConfig(16, 16, True)",
    "fixed": "FixedSparsityConfig(16, 16, True, num_different_global_patterns=4)",
    "variable": "VariableSparsityConfig(16, 16, True, num_random_blocks=2)",
    "bigbird": "BigBirdSparsityConfig(16, 16, True)",
    "bslongformer": "BSLongformerSparsityConfig(16, 16, True)",
    "local_sliding_window": "LocalSlidingWindowSparsityConfig(16, 16)",  # has no different_layout_per_head
    # the newer kinds give every head the same layout (no different_layout_per_head either)
    "causal_sliding_window": "CausalSlidingWindowSparsityConfig(16, 16, 64)",
    "streaming": "StreamingSparsityConfig(16, 16, 4, 64)",
    "dilated": "DilatedSparsityConfig(16, 16, 8, 64)",
    "document": "DocumentSparsityConfig(16, 16, (1000, 3096, 20000, 7000))",
}
ONE = """
import random, time
from sparsecli.layouts import *
config = {expr}
random.seed(0)
t0 = time.perf_counter()
layout = config.make_layout(65536)
print(time.perf_counter() - t0)
"""

if __name__ == "__main__":
    for kind, expr in CONFIGS.items():
        times = [float(subprocess.run([sys.executable, "-c", ONE.format(expr=expr)], capture_output=True, text=True,
                                      check=True).stdout) for _ in range(3)]
        print(f"{kind:22s} min {min(times):5.2f} s  median {statistics.median(times):5.2f} s  max {max(times):5.2f} s")
