"""Layout figures: the reach figure against a breadth-first search, its speed, distinct heads,
tile densities, and what the report says about blocks the kernels cannot run."""
import random
import time
from collections import deque

import pytest
import torch

from sparsecli import BigBirdSparsityConfig, BSLongformerSparsityConfig, DocumentSparsityConfig
from sparsecli.analysis.report import KERNEL_BLOCKS, analyze, analyze_config, distinct_heads
from sparsecli.analysis.reach import layers_to_full_reach


def _bfs_reach(A: torch.Tensor, causal: bool):
    """Largest (at least 1) shortest-path length from a query block to a key block it must see."""
    nb, worst = A.shape[0], 1
    nbrs = [torch.nonzero(A[i]).flatten().tolist() for i in range(nb)]
    for i in range(nb):
        dist = {i: 0}
        todo = deque([i])
        while todo:
            u = todo.popleft()
            for v in nbrs[u]:
                if v not in dist:
                    dist[v] = dist[u] + 1
                    todo.append(v)
        for j in range(i + 1 if causal else nb):
            if j not in dist:
                return None
            worst = max(worst, dist[j])
    return worst


@pytest.mark.parametrize("trial", range(60))
def test_reach_matches_breadth_first_search(trial):
    rng = random.Random(trial)
    nb = rng.choice([1, 2, 63, 64, 65, 130, rng.randint(1, 100)])
    heads = []
    for _ in range(rng.randint(1, 3)):
        A = torch.rand(nb, nb, generator=torch.Generator().manual_seed(trial)) < rng.random() * 0.08
        if rng.random() < 0.7:
            A |= torch.ones(nb, nb, dtype=torch.bool).tril().triu(-rng.randint(0, 3))
        heads.append(A)
    causal = rng.random() < 0.5
    assert layers_to_full_reach(heads, causal) == [_bfs_reach(A, causal) for A in heads]


def test_reach_of_256_distinct_heads_at_1024_blocks_is_fast():
    config = BigBirdSparsityConfig(256, 16, different_layout_per_head=True)
    random.seed(0)
    layout = config.make_layout(16384)
    groups = distinct_heads(layout)
    assert len(groups) == 256
    heads = [layout[first] for first, _ in groups]
    start = time.perf_counter()
    reach = layers_to_full_reach(heads)
    elapsed = time.perf_counter() - start
    assert reach == [2] * 256  # the global block joins any two blocks in two hops
    assert elapsed < 6, f"{elapsed:.1f} s (the pairwise float-matmul version took 57 s; target < 2 s)"


def test_distinct_heads_groups_identical_heads_in_order():
    lay = torch.zeros(5, 4, 4, dtype=torch.int64)
    lay[1, 0, 0] = lay[3, 0, 0] = 1
    lay[4, 2, 1] = 1
    assert distinct_heads(lay) == [(0, [0, 2]), (1, [1, 3]), (4, [4])]


def test_figures_weight_distinct_heads_by_their_count():
    lay = torch.zeros(3, 8, 8, dtype=torch.int64)
    lay[:2] = torch.eye(8, dtype=torch.int64)
    lay[2] = torch.ones(8, 8, dtype=torch.int64).tril()
    r = analyze(lay, 16, unidirectional=True)
    assert r.nonzero_blocks == 8 + 8 + 36 and r.future_blocks == 0
    assert r.density_per_head == [8 / 64, 8 / 64, 36 / 64]
    assert r.tile_density == {64: (2 * 2 + 3) / 12, 128: 1.0}  # 2x2 tiles a head: diagonal 2, triangle 3
    assert r.full_reach_never and r.layers_to_full_reach is None  # the diagonal heads never mix


def test_kernel_blocks_match_the_kernels():
    from sparsecli.kernels._checks import BLOCKS

    assert KERNEL_BLOCKS == BLOCKS


@pytest.mark.parametrize("block", [8, 48, 256])
def test_blocks_the_kernels_reject_get_no_tile_density_and_a_note(block):
    r = analyze(torch.ones(1, 4, 4, dtype=torch.int64), block)
    assert r.tile_density == {64: None, 128: None}
    assert any("the kernels take blocks of 16, 32, 64, 128 only" in n for n in r.notes)


def test_analyze_config_echoes_every_parameter_and_the_config_figures():
    config = BSLongformerSparsityConfig(2, 16, global_block_indices=[0, 50])
    r = analyze_config(config, config.make_layout(512))
    assert r.config == {"mode": "bslongformer", "num_heads": 2, "block": 16, "different_layout_per_head": False,
                        "num_sliding_window_blocks": 3, "global_block_indices": [0, 50],
                        "global_block_end_indices": None, "attention": "bidirectional"}
    assert any("global_block_indices 50 ignored: past the last block (31)" in n for n in r.notes)
    doc = DocumentSparsityConfig(1, 64, (100, 900))
    assert analyze_config(doc, doc.make_layout(1024)).straddling_blocks == 2
