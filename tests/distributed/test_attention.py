"""context_parallel_attention on 1-4 gloo processes (fp32, CPU reference path) against
blocksparse_attention on the whole sequence in one process: outputs, lse, and the gradients of
q, k and v, to a relative error of 1e-5.

One process launch per world size runs all of that size's cases (a launch costs seconds).
Between them the cases cover every strategy, causal and not, per-head and shared layouts with
empty rows and global rows and columns, GQA and MQA, batch > 1, block counts the world size does
not divide, a rank holding no block, and spread rows (all of them, some of them, none).
"""
import pytest

from .cases import AttnCase, rel_err, run_cases, single_process
from .ranks import run_ranks

TOLERANCE = 1e-5

CASES = {
    1: [AttnCase(causal=True), AttnCase(strategy="contiguous", layout_heads="2d", q_heads=4, kv_heads=2)],
    2: [AttnCase(strategy=s, causal=c, seed=i, global_factor=1.0) for i, (s, c) in enumerate(
        [("balanced", False), ("balanced", True), ("contiguous", False), ("contiguous", True),
         ("zigzag", False), ("zigzag", True)])],
    3: [AttnCase(nb=7, global_factor=1.2, q_heads=4, kv_heads=2, seed=7),  # the global row and one more are spread
        AttnCase(nb=7, strategy="zigzag", causal=True, layout_heads="one", batch=2, seed=8),
        AttnCase(layout_heads="2d", causal=True, seed=9, global_factor=1.0)],
    4: [AttnCase(nb=3, global_rows=(1,), empty_rows=(), causal=True, seed=10),  # a rank holds no block
        AttnCase(nb=10, strategy="contiguous", kv_heads=2, seed=11),
        AttnCase(nb=9, causal=True, empty_rows=(0, 5), seed=12, global_factor=1.0)],
}


@pytest.mark.parametrize("world_size", sorted(CASES))
def test_matches_single_process(world_size, monkeypatch):
    cases = CASES[world_size]
    per_rank = run_ranks(run_cases, world_size, cases)
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # the single-process side on the same CPU reference path
    for i, case in enumerate(cases):
        plan = case.plan(world_size)
        want = single_process(case)
        for name in ("out", "lse", "dq", "dk", "dv"):
            got = plan.unshard([per_rank[r][i][name] for r in range(world_size)], dim=2)
            err = rel_err(got, want[name])
            assert err <= TOLERANCE, f"{case}: {name} relative error {err:.2e} > {TOLERANCE}"


def test_cases_exercise_what_they_claim():
    """The case list really holds spread rows (many, and a few), empty rows, an
    empty rank and block counts the world size does not divide (else the test above would pass
    without covering them)."""
    spread = {(n, i): c.plan(n).spread.nonzero().flatten().tolist() for n, cs in CASES.items() for i, c in enumerate(cs)}
    assert len(spread[(2, 0)]) > 1 and len(spread[(2, 1)]) > 1 and spread[(2, 2)] == []
    assert 2 in spread[(3, 0)] and len(spread[(3, 0)]) < CASES[3][0].nb / 2
    assert spread[(4, 2)]
    assert min(len(CASES[4][0].plan(4).blocks(r)) for r in range(4)) == 0
    assert not CASES[4][2].layout()[:, 5].any()
    assert any(c.nb % n for n, cs in CASES.items() for c in cs)
