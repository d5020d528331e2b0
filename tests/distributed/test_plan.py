"""The context-parallel plan: the split, the per-rank problems and traffic, and the issue's targets
on its cases (S 131072, block 128, H 16 over 4 KV heads of 128, N = 2, 4, 8)."""
import functools
import random

import pytest
import torch

from sparsecli.distributed import STRATEGIES, plan_context_parallel
from sparsecli.distributed.cases import BLOCK, CASES, EXTRA_CASES, HEAD_DIM, KV_HEADS, WORLD_SIZES
from sparsecli.distributed.partition import balanced_runs, even_runs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Plans reduce small bool tensors: intra-op threads only fight over a busy machine's cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def random_layout(nb, heads=3, density=0.25, seed=0, global_rows=(1,), empty_rows=(3,)):
    gen = torch.Generator().manual_seed(seed)
    lay = torch.rand(heads, nb, nb, generator=gen) < density
    lay[:, [r for r in global_rows if r < nb]] = True
    lay[:, [r for r in empty_rows if r < nb]] = False
    return lay


# -- the split ---------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("nb", [1, 5, 7, 16])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 8])
def test_every_block_on_exactly_one_rank(strategy, nb, world_size):
    plan = plan_context_parallel(random_layout(nb), 16, world_size, strategy=strategy)
    held = [plan.blocks(r) for r in range(world_size)]
    for b in held:
        assert b.dtype == torch.long and b.dim() == 1 and torch.equal(b, b.sort().values)
    assert torch.equal(torch.cat(held).sort().values, torch.arange(nb))
    assert [plan.shard_length(r) for r in range(world_size)] == [len(b) * 16 for b in held]


@pytest.mark.parametrize("nb, world_size", [(10, 4), (16, 3), (7, 2), (3, 4)])
def test_contiguous_runs_and_zigzag_chunks(nb, world_size):
    contiguous = plan_context_parallel(random_layout(nb), 16, world_size, strategy="contiguous")
    bounds = even_runs(nb, world_size)
    for r in range(world_size):
        assert contiguous.blocks(r).tolist() == list(range(bounds[r], bounds[r + 1]))
    zigzag = plan_context_parallel(random_layout(nb), 16, world_size, strategy="zigzag")
    chunks = even_runs(nb, 2 * world_size)
    for r in range(world_size):
        mirror = 2 * world_size - 1 - r
        want = list(range(chunks[r], chunks[r + 1])) + list(range(chunks[mirror], chunks[mirror + 1]))
        assert zigzag.blocks(r).tolist() == want


def _best_bottleneck(work, parts):
    """The least largest-run work over every split of ``work`` into ``parts`` contiguous runs."""
    @functools.cache
    def best(start, k):
        if k == 1:
            return sum(work[start:])
        return min(max(sum(work[start:cut]), best(cut, k - 1)) for cut in range(start, len(work) + 1))

    return best(0, parts)


@pytest.mark.parametrize("seed", range(40))
def test_balanced_runs_reach_the_best_contiguous_bottleneck(seed):
    rng = random.Random(seed)
    n, parts = rng.randint(1, 12), rng.randint(1, 5)
    work = [rng.choice([0, 0, 1, 2, 3, 10, 40]) for _ in range(n)]
    bounds = balanced_runs(work, parts)
    assert len(bounds) == parts + 1 and bounds[0] == 0 and bounds[-1] == n
    assert all(a <= b for a, b in zip(bounds, bounds[1:]))
    largest = max(sum(work[a:b]) for a, b in zip(bounds, bounds[1:]))
    assert largest == _best_bottleneck(tuple(work), parts)
    assert balanced_runs(work, parts) == bounds  # deterministic


def test_balanced_spreads_only_heavy_rows_and_balances_them():
    # One dense row among band rows: alone it would be most of a rank's work.
    nb = 64
    lay = torch.eye(nb, dtype=torch.bool) | torch.eye(nb, dtype=torch.bool).roll(1, 1)
    lay[5] = True
    plan = plan_context_parallel(lay, 16, 4)
    assert plan.spread.nonzero().flatten().tolist() == [5]
    stats = plan.stats()
    assert stats["imbalance"] < 1.05
    whole = plan_context_parallel(lay, 16, 4, strategy="contiguous").stats()
    assert whole["imbalance"] > 1.3
    # Rank holding row 5 fetches no block for it; the others borrow its Q block.
    holder = int(plan.owner[5])
    assert stats["fetched_blocks"][holder] <= 2
    assert sum(stats["borrowed_rows"]) == 3


def test_shard_unshard_and_positions():
    plan = plan_context_parallel(random_layout(7), 16, 3, strategy="zigzag")
    x = torch.arange(2 * 7 * 16 * 5).view(2, 7 * 16, 5)
    shards = [plan.shard(x, r, dim=1) for r in range(3)]
    assert torch.equal(plan.unshard(shards, dim=1), x)
    tokens = torch.arange(7 * 16)
    for r in range(3):
        assert torch.equal(plan.shard(tokens, r, dim=0), plan.positions(r))
        assert torch.equal(plan.positions(r) // 16, plan.blocks(r).repeat_interleave(16))
    with pytest.raises(ValueError, match="x has 100 tokens along dim 1, but the plan splits 7 blocks of 16 = 112"):
        plan.shard(torch.zeros(2, 100, 5), 0, dim=1)
    with pytest.raises(ValueError, match="shard 1 has 3 tokens"):
        plan.unshard([shards[0], shards[1][:, :3], shards[2]], dim=1)
    with pytest.raises(ValueError, match="rank must be an integer in 0..2, got 3"):
        plan.blocks(3)


def test_causal_drops_blocks_above_the_diagonal():
    plan = plan_context_parallel(torch.ones(2, 6, 6), 16, 2, causal=True)
    lower = torch.ones(6, 6, dtype=torch.bool).tril()
    assert torch.equal(plan.layout, lower[None])


# -- what each rank computes and receives -------------------------------------------------------
def check_problems_cover_the_layout(plan):
    """Every non-zero (head, row, key) block is computed exactly once, by one rank's local, remote
    or helper part; each rank fetches exactly the remote keys of the rows it computes whole."""
    layout = plan.layout
    count = torch.zeros(layout.shape, dtype=torch.long)
    for r in range(plan.world_size):
        p = plan.problem(r)
        for part, rows, cols in ((p.local, p.blocks, p.blocks), (p.remote, p.blocks, p.fetched),
                                 (p.helper, p.borrowed, p.blocks)):
            h, i, j = part.nonzero(as_tuple=True)
            count.index_put_((h, rows[i], cols[j]), torch.ones_like(h), accumulate=True)
        whole = [b for b in p.blocks.tolist() if not plan.spread[b]]
        want = {j for b in whole for j in layout[:, b].any(0).nonzero().flatten().tolist()} - set(p.blocks.tolist())
        assert set(plan.fetched(r).tolist()) == want
        assert len(set(plan.fetched(r).tolist())) == len(plan.fetched(r))
        assert plan.stats()["fetched_blocks"][r] == len(want)
    assert torch.equal(count, layout.long())


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("world_size", [2, 3, 5])
@pytest.mark.parametrize("causal", [False, True])
def test_problems_cover_the_layout(strategy, world_size, causal):
    plan = plan_context_parallel(random_layout(11, seed=world_size), 16, world_size, causal=causal, strategy=strategy)
    check_problems_cover_the_layout(plan)


def test_stats_figures():
    lay = random_layout(12, heads=4)
    plan = plan_context_parallel(lay, 32, 3, strategy="contiguous")
    s = plan.stats(head_dim=64, kv_heads=2, dtype=torch.float16)
    assert sum(s["work"]) == int(lay.sum()) and s["blocks"] == [4, 4, 4]
    assert s["imbalance"] == pytest.approx(max(s["work"]) / (sum(s["work"]) / 3))
    kv_block = 2 * 2 * 32 * 64 * 2  # K and V, 2 heads, 32 tokens, 64 dims, 2 bytes
    assert s["bytes_forward"] == [f * kv_block for f in s["fetched_blocks"]]
    assert s["ring_bytes"] == 2 * 12 * kv_block // 3
    assert sum(s["bytes_backward"]) == sum(s["bytes_forward"])  # every fetched block's dK/dV goes home
    shared = plan_context_parallel(lay[:1].expand(4, -1, -1), 32, 3)
    assert shared.layout.shape[0] == 1 and shared.num_heads == 4
    assert sum(shared.stats()["work"]) == 4 * int(lay[0].sum())
    assert plan.stats() == plan.stats(128, 8, torch.bfloat16)  # the defaults


@pytest.mark.parametrize("call, message", [
    (lambda: plan_context_parallel(torch.ones(3, 4), 16, 2), r"layout must be \(H, nb, nb\) or \(nb, nb\)"),
    (lambda: plan_context_parallel(torch.full((4, 4), 2), 16, 2), "layout must hold only 0 and 1"),
    (lambda: plan_context_parallel([[1]], 16, 2), "layout must be a torch.Tensor"),
    (lambda: plan_context_parallel(torch.ones(4, 4), 0, 2), "block must be a positive integer, got 0"),
    (lambda: plan_context_parallel(torch.ones(4, 4), 16, 0), "world_size must be a positive integer, got 0"),
    (lambda: plan_context_parallel(torch.ones(4, 4), 16, 2, strategy="ring"), "strategy must be one of"),
    (lambda: plan_context_parallel(torch.ones(4, 4), 16, 2, causal=1), "causal must be True or False"),
    (lambda: plan_context_parallel(torch.ones(4, 4), 16, 2).stats(head_dim=0), "head_dim must be a positive"),
    (lambda: plan_context_parallel(torch.ones(4, 4), 16, 2).stats(dtype="bf16"), "dtype must be a torch.dtype"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- the issue's targets ------------------------------------------------------------------------
@functools.cache
def issue_layout(name):
    return next(c for c in CASES + EXTRA_CASES if c.name == name).layout()


@functools.cache
def issue_plan(name, world_size, strategy):
    case = next(c for c in CASES + EXTRA_CASES if c.name == name)
    return plan_context_parallel(issue_layout(name), BLOCK, world_size, causal=case.causal, strategy=strategy)


@pytest.mark.parametrize("case", [c.name for c in CASES])
def test_issue_cases_meet_the_targets(case):
    for n in WORLD_SIZES:
        for strategy in STRATEGIES:
            s = issue_plan(case, n, strategy).stats(head_dim=HEAD_DIM, kv_heads=KV_HEADS)
            if strategy == "balanced":
                assert s["imbalance"] <= 1.03, (case, n, s["imbalance"])
            for way in ("bytes_forward", "bytes_backward"):
                assert max(s[way]) <= s["ring_bytes"], (case, n, strategy, way)
                if n == 8 and case in ("sliding_window", "causal_sliding_window"):
                    assert max(s[way]) <= s["ring_bytes"] / 4, (case, n, strategy, way)
    check_problems_cover_the_layout(issue_plan(case, 8, "balanced"))


def test_per_head_bigbird_limit():
    """The bundled BigBird preset at 128k: 16 heads x 3 random blocks per row reach nearly every
    key block from every rank. Balancing its global rows then costs their Q blocks and partial
    outputs on top of the K/V, which alone stays within a dense ring's."""
    plan = issue_plan("bigbird_per_head", 8, "balanced")
    s = plan.stats(head_dim=HEAD_DIM, kv_heads=KV_HEADS)
    assert s["imbalance"] <= 1.03
    kv_block = 2 * KV_HEADS * BLOCK * HEAD_DIM * 2
    assert max(s["fetched_blocks"]) * kv_block <= s["ring_bytes"]
    assert issue_plan("bigbird_per_head", 8, "contiguous").stats(HEAD_DIM, KV_HEADS)["imbalance"] > 2
