"""bench --layout FILE --block B: a saved layout benchmarked like a preset (plan, checked rows,
fingerprint of the file's content, workers), and one-line errors for what does not fit."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparsecli.bench.cases import Overrides, build_layout, expand, layout_figures, layout_fingerprint
from sparsecli.bench.file_preset import layout_file_preset
from sparsecli.bench.runner import Runner, RunOptions
from sparsecli.bench.timing import Timing
from sparsecli.bench.worker import plan_of
from sparsecli.cli import app
from sparsecli.layouts.files import load_layout

from .test_cli_bench import via_main

runner = CliRunner()


def fixed_timer(fn):
    fn()  # the callable must run; its time does not matter here
    return Timing(1.0, 0.9, 1.1)


@pytest.fixture
def saved(tmp_path):
    """`sparsecli layout bigbird --heads 2 --seq 256 --block 32 --save` as the user would make it."""
    path = tmp_path / "mine.pt"
    r = runner.invoke(app, ["layout", "bigbird", "--heads", "2", "--seq", "256", "--block", "32",
                            "--save", str(path), "--format", "json"])
    assert r.exit_code == 0, r.output
    return path


def test_dry_run_plans_the_files_layout(saved):
    r = runner.invoke(app, ["bench", "--layout", str(saved), "--block", "32", "--dry-run", "--format", "json",
                            "--providers", "sparse,sdpa-flash", "--head-dim", "16"])
    assert r.exit_code == 0, r.output
    planned = json.loads(r.stdout)["planned"]
    layout = load_layout(saved)
    assert [p["case_id"] for p in planned] == ["mine/fwd/S256-B256-H2-D16-bf16/sparse",
                                               "mine/fwd/S256-B256-H2-D16-bf16/sdpa-flash"]
    assert planned[0]["density"] == pytest.approx(float(layout.float().mean())) and planned[0]["block"] == 32


def test_rows_are_checked_against_the_files_layout(saved):
    plan = expand([layout_file_preset(saved, 32)], Overrides(head_dims=(16,), dtypes=("fp32",), batch=1,
                                                             providers=("sparse", "naive", "sdpa-flash")))
    rows = Runner(plan, RunOptions(device="cpu", timer=fixed_timer)).run()
    assert [r["status"] for r in rows] == ["ok"] * 3 and all(r["check"] == "passed" for r in rows[:2])
    assert rows[0]["max_rel_err"] < 1e-6 and rows[0]["density"] == pytest.approx(float(load_layout(saved).float().mean()))


def test_the_fingerprint_follows_the_files_content(saved, tmp_path):
    first = layout_file_preset(saved, 32)
    layout = load_layout(saved)
    layout[0, 0, -1] = 1 - layout[0, 0, -1]
    other = tmp_path / "mine.npy"
    np.save(other, layout.numpy())
    assert layout_fingerprint(layout_file_preset(other, 32)) != layout_fingerprint(first)
    np.save(other, load_layout(saved).numpy())  # the same layout in another format: the same entry
    assert layout_fingerprint(layout_file_preset(other, 32)) == layout_fingerprint(first)
    assert torch.equal(build_layout(first, 256), load_layout(saved))
    assert layout_figures(build_layout(first, 256), 32, False).nnz_blocks == int(load_layout(saved).sum())


def test_workers_rebuild_the_same_plan(saved):
    overrides = {"head_dims": [16], "providers": ["sparse", "flex"]}
    plan = expand([layout_file_preset(saved, 32)], Overrides(head_dims=(16,), providers=("sparse", "flex")))
    spec = {"presets": [], "layout": {"path": str(saved), "block": 32}, "overrides": overrides,
            "case_ids": [plan.cases[1].case_id]}
    assert [c.case_id for c in plan_of(spec).cases] == [plan.cases[1].case_id]


@pytest.mark.parametrize("args, fragment", [
    (["--block", "32"], "--block is a --layout file's block size"),
    (["--layout", "{saved}"], "needs --block B: the file holds blocks, not tokens"),
    (["--layout", "{saved}", "--block", "48"], "--block must be one of 16, 32, 64, 128"),
    (["--layout", "{saved}", "--block", "32", "--preset", "fixed"], "give --preset or --layout, not both"),
    (["--layout", "{saved}", "--block", "32", "--seq", "512"], "holds 8 blocks of 32 = 256 tokens; drop --seq"),
    (["--layout", "{bad}", "--block", "32"], "holds 2 at"),
    (["--layout", "{missing}", "--block", "32"], "no such file"),
])
def test_layout_file_errors_are_one_line(saved, tmp_path, monkeypatch, capsys, args, fragment):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.full((4, 4), 2))
    args = [a.format(saved=saved, bad=bad, missing=tmp_path / "nope.pt") for a in args]
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--dry-run", *args])
    assert code == 1 and out == "" and fragment in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
