"""What `sparsecli bench` accepts: the head dims the kernels take (one rule, shared with the
kernels' own argument check), and only results files that hold results.

Before: ``bench --head-dim 96`` said "use one of 16, 32, 64, 128" although the kernels (and FA4)
take any multiple of 8 up to 256, and ``bench --from`` of a file whose ``results`` is ``[]``
printed an empty table and exited 0.
"""
import json
import sys

import pytest
import torch
from typer.testing import CliRunner

from sparsecli.bench.cases import Overrides, validate_overrides
from sparsecli.cli import app, main
from sparsecli.layouts.presets import ConfigError, parse_preset
from sparsecli.plumbing.errors import UserError

runner = CliRunner()


def via_main(monkeypatch, capsys, args):
    monkeypatch.setattr(sys, "argv", ["sparsecli", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _kernels_take(d: int) -> bool:
    from sparsecli.kernels.fused.args import check_qkv

    q = torch.empty(1, 1, 1, d) if d > 0 else torch.empty(1, 1, 1, 0)
    try:
        check_qkv(q, q, q)
    except ValueError:
        return False
    return True


def _bench_takes(d: int) -> bool:
    try:
        validate_overrides(Overrides(head_dims=(d,)))
    except UserError:
        return False
    return True


def _preset_takes(d: int) -> bool:
    data = {"sparsity": {"mode": "fixed", "num_heads": 2, "block": 16}, "bench": {"head_dim": d}}
    try:
        parse_preset(data, "p.yaml")
    except ConfigError:
        return False
    return True


def test_bench_and_presets_take_exactly_the_head_dims_the_kernels_take():
    for d in range(1, 300):
        assert _bench_takes(d) == _preset_takes(d) == _kernels_take(d), d
    assert _bench_takes(96) and _bench_takes(8) and _bench_takes(256) and not _bench_takes(100)


def test_dry_run_plans_head_dim_96():
    r = runner.invoke(app, ["bench", "--preset", "fixed", "--head-dim", "96", "--dry-run", "--format", "json"])
    assert r.exit_code == 0, r.output
    planned = json.loads(r.stdout)["planned"]
    assert planned and {row["head_dim"] for row in planned} == {96}


def test_a_head_dim_the_kernels_refuse_says_their_rule(monkeypatch, capsys):
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--preset", "fixed", "--head-dim", "100", "--dry-run"])
    assert code == 1 and out == ""
    assert err.strip() == ("error: --head-dim 100: the kernels take head dims that are a multiple of 8 "
                           "from 8 to 256")


def test_results_file_without_results_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"schema_version": 1, "env": {}, "results": []}))
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--from", str(empty)])
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {empty}: ") and "no results" in lines[0], err
