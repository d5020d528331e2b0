"""`sparsecli layout ... --cp N`: the context-parallel section of the report, in the table, in JSON,
on the heatmap, for kinds, presets, files and --vs; and its bad flags."""
import json

import pytest
import torch
from matplotlib.image import imread
from typer.testing import CliRunner

from sparsecli.cli import app
from sparsecli.distributed import plan_context_parallel
from sparsecli.plumbing.errors import UserError

runner = CliRunner()


def _ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.exception, res.output)
    return res.output


def _json(args):
    return json.loads(_ok([*args, "--format", "json"]))


def test_table_has_each_rank_and_each_strategy():
    out = _ok(["layout", "bigbird", "--seq", "8192", "--block", "64", "--cp", "4", "--kv-heads", "4"])
    assert "context parallelism: 4 ranks, balanced" in out and "K/V 4 heads x 128, Q 16 heads" in out
    assert "strategies (a dense ring receives" in out
    for name in ("balanced *", "contiguous", "zigzag"):
        assert name in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["1"], ["2"], ["3"])]
    assert [r[0] for r in rows[-4:]] == ["0", "1", "2", "3"]


def test_json_section_matches_the_library():
    doc = _json(["layout", "bigbird", "--seq", "8192", "--block", "64", "--heads", "8", "--cp", "3",
                 "--cp-strategy", "zigzag", "--head-dim", "64", "--kv-heads", "2"])
    cp = doc["context_parallel"]
    assert (cp["world_size"], cp["strategy"], cp["head_dim"], cp["kv_heads"], cp["q_heads"]) == (3, "zigzag", 64, 2, 8)
    assert [s["strategy"] for s in cp["strategies"]] == ["balanced", "contiguous", "zigzag"]
    ranks = cp["ranks"]
    assert sum(r["blocks"] for r in ranks) == 128 and sum(r["work_share"] for r in ranks) == pytest.approx(1)
    import random

    from sparsecli.layouts import BigBirdSparsityConfig

    random.seed(0)
    lay = BigBirdSparsityConfig(8, 64).make_layout(8192)
    plan = plan_context_parallel(lay, 64, 3, strategy="zigzag")
    block_mib = 2 * 2 * 64 * 64 * 2 / 2**20  # K and V, 2 heads, 64 tokens, 64 dims, bf16
    for r, row in enumerate(ranks):
        assert row["fetched_blocks"] == len(plan.fetched(r))
        assert row["recv_mib_forward"] == pytest.approx(len(plan.fetched(r)) * block_mib)
    zig = next(s for s in cp["strategies"] if s["strategy"] == "zigzag")
    assert zig["imbalance"] == pytest.approx(plan.stats()["imbalance"])
    bal = next(s for s in cp["strategies"] if s["strategy"] == "balanced")
    assert bal["imbalance"] < zig["imbalance"]


def test_causal_kinds_plan_causally():
    cp = _json(["layout", "causal_sliding_window", "--seq", "4096", "--cp", "2"])["context_parallel"]
    assert cp["causal"] is True and cp["ranks"][1]["fetched_blocks"] == 3  # the window's 3 earlier blocks


def test_preset_file_and_vs(tmp_path):
    cp = _json(["layout", "--preset", "streaming", "--cp", "2"])["context_parallel"]
    assert cp["world_size"] == 2
    saved = tmp_path / "l.pt"
    _ok(["layout", "dilated", "--seq", "2048", "--save", str(saved)])
    cp = _json(["layout", "--from", str(saved), "--block", "16", "--cp", "5"])["context_parallel"]
    assert len(cp["ranks"]) == 5 and sum(r["blocks"] for r in cp["ranks"]) == 128
    doc = _json(["layout", "streaming", "--seq", "4096", "--vs", "causal_sliding_window", "--cp", "2"])
    assert doc["a"]["context_parallel"]["world_size"] == doc["b"]["context_parallel"]["world_size"] == 2
    out = _ok(["layout", "streaming", "--seq", "4096", "--vs", "causal_sliding_window", "--cp", "2"])
    assert "A: context parallelism" in out and "B: context parallelism" in out


def test_plot_adds_a_rank_panel(tmp_path):
    base, split = tmp_path / "a.png", tmp_path / "b.png"
    _ok(["layout", "local_sliding_window", "--seq", "2048", "--plot", "-o", str(base)])
    _ok(["layout", "local_sliding_window", "--seq", "2048", "--plot", "-o", str(split), "--cp", "4"])
    assert imread(split).shape[1] > 1.8 * imread(base).shape[1]  # one head panel, then the rank panel
    vs = tmp_path / "vs.png"
    _ok(["layout", "streaming", "--seq", "2048", "--vs", "local_sliding_window", "--plot", "-o", str(vs), "--cp", "2"])
    assert vs.stat().st_size > 10_000


@pytest.mark.parametrize("args, fragment", [
    (["--head-dim", "64"], "--head-dim describes a context-parallel split; add --cp N"),
    (["--cp-strategy", "zigzag", "--kv-heads", "2"], "--cp-strategy, --kv-heads describe a context-parallel split"),
    (["--cp", "0"], "--cp must be at least 1, got 0"),
    (["--cp", "2", "--head-dim", "0"], "--head-dim must be at least 1, got 0"),
    (["--cp", "2", "--kv-heads", "3"], "--kv-heads 3 must divide the layout's 16 heads"),
])
def test_bad_flags(args, fragment):
    res = runner.invoke(app, ["layout", "bigbird", "--seq", "2048", *args])
    assert isinstance(res.exception, UserError), (res.exception, res.output)
    assert "\n" not in str(res.exception) and fragment in str(res.exception), str(res.exception)


def test_rank_panel_colours_spread_blocks_by_their_key_owner():
    from sparsecli.distributed.plot import computing_rank

    nb = 32
    lay = torch.eye(nb, dtype=torch.bool)
    lay[0] = True  # a global row: spread over the keys' owners
    plan = plan_context_parallel(lay, 16, 4)
    assert plan.spread.tolist()[0]
    rank = computing_rank(plan)
    assert torch.equal(rank[0], plan.owner)
    assert torch.equal(rank[1:], plan.owner[1:, None].expand(-1, nb))
