"""`sparsecli bench` / `sparsecli compare` through CliRunner and main(): outputs, exit codes, errors."""
import json
import sys

import pytest
from typer.testing import CliRunner

from sparsecli.plumbing.output_files import write_text_atomic
from sparsecli.bench import results as res
from sparsecli.bench.compare import make_baseline
from sparsecli.cli import app, main
from sparsecli.cli.console import out_console

from .conftest import results_doc

runner = CliRunner()
BASE = {"sparse": 0.5, "three-op": 1.5, "sdpa-flash": 1.0, "flex": 0.8}


def via_main(monkeypatch, capsys, args):
    """Run the real entry point (UserError -> one line + exit 1) in-process."""
    monkeypatch.setattr(sys, "argv", ["sparsecli", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


def write(tmp_path, name, doc):
    return str(write_text_atomic(tmp_path / name, res.to_json(doc)))


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_dry_run_lists_cases_in_every_format(tiny_preset, fmt):
    r = runner.invoke(app, ["bench", "-p", str(tiny_preset), "--dry-run", "--format", fmt])
    assert r.exit_code == 0, r.output
    if fmt == "json":
        planned = json.loads(r.stdout)["planned"]
        assert len(planned) == 2 * 2 * 2 * 3 and planned[0]["case_id"] == "tiny/fwd/S128-B1-H2-D16-fp32/sparse"
    elif fmt == "csv":
        assert r.stdout.splitlines()[0].startswith("case_id,group_id,preset,provider")
        assert len(r.stdout.splitlines()) == 1 + 24
    else:
        assert "24 planned cases" in r.stdout and "S256-B1-H2-D32" in r.stdout


def test_no_gpu_is_one_line_and_exit_1(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--preset", "fixed", "--seq", "4096"])
    assert code == 1 and out == ""
    assert err.strip().startswith("error: no CUDA GPU") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, match", [
    (["bench", "--preset", "fixd"], "did you mean 'fixed'"),
    (["bench", "--preset", "fixed", "--providers", "sparse,sprse"], "did you mean 'sparse'"),
    (["bench", "--preset", "fixed", "-o", "/nonexistent/dir/r.json"], "does not exist"),
    (["bench", "--preset", "fixed", "--seq", "4k"], "comma-separated integers"),
    (["bench", "--preset", "fixed", "--update-baseline"], "needs --baseline"),
    (["compare", "/nonexistent/a.json", "/nonexistent/b.json"], "no such file"),
])
def test_errors_are_one_line_exit_1(monkeypatch, capsys, args, match):
    code, out, err = via_main(monkeypatch, capsys, [*args, "--dry-run"] if args[0] == "bench" else args)
    assert code == 1, err
    assert match in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fmt", ["table", "json", "csv"])
def test_render_a_results_file_in_every_format(tmp_path, monkeypatch, fmt):
    monkeypatch.setattr(out_console, "width", 240)  # a wide terminal, so cells are not elided
    path = write(tmp_path, "r.json", results_doc(dict(BASE, **{"sdpa-masked": "oom"})))
    r = runner.invoke(app, ["bench", "--from", path, "--format", fmt])
    assert r.exit_code == 0, r.output
    if fmt == "json":
        assert json.loads(r.stdout)["results"][0]["case_id"].endswith("/sparse")
    elif fmt == "csv":
        assert r.stdout.splitlines()[0] == ",".join(res.COLUMNS)
    else:
        assert "sdpa-flash" in r.stdout and "oom" in r.stdout and "Test GPU" in r.stdout


def test_plot_from_a_results_file(tmp_path):
    path = write(tmp_path, "r.json", results_doc(BASE))
    png = tmp_path / "perf.png"
    r = runner.invoke(app, ["bench", "--from", path, "--plot", str(png), "--format", "json"])
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 20_000


def test_gate_writes_results_first_then_exits_3(tmp_path):
    base = write(tmp_path, "base.json", make_baseline(results_doc(BASE)))
    new = write(tmp_path, "new.json", results_doc(dict(BASE, sparse=0.56)))
    out = tmp_path / "gated.json"
    r = runner.invoke(app, ["bench", "--from", new, "--baseline", base, "-o", str(out)])
    assert r.exit_code == 3, r.output
    assert "regression" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["gate_report"]["passed"] is False and doc["gate_report"]["counts"]["regression"] == 1


def test_compare_command_exit_codes_and_report(tmp_path):
    base = write(tmp_path, "base.json", results_doc(BASE))
    same = write(tmp_path, "same.json", results_doc({k: v * 1.02 for k, v in BASE.items()}))
    slow = write(tmp_path, "slow.json", results_doc(dict(BASE, **{"three-op": 1.5 * 1.10})))
    assert runner.invoke(app, ["compare", base, same]).exit_code == 0
    report = tmp_path / "gate.json"
    r = runner.invoke(app, ["compare", base, slow, "--format", "json", "-o", str(report)])
    assert r.exit_code == 3
    assert json.loads(r.stdout)["counts"] == {"pass": 1, "regression": 1}
    assert json.loads(report.read_text())["passed"] is False
    assert runner.invoke(app, ["compare", base, slow, "--tolerance", "0.2"]).exit_code == 0


def test_update_baseline_from_a_results_file(tmp_path):
    new = write(tmp_path, "new.json", results_doc(BASE))
    base = tmp_path / "baseline.json"
    r = runner.invoke(app, ["bench", "--from", new, "--baseline", str(base), "--update-baseline"])
    assert r.exit_code == 0, r.output
    doc = res.load(base)
    assert set(doc["gate"]) == {"p/fwd/S4096-B1-H16-D64-bf16/sparse", "p/fwd/S4096-B1-H16-D64-bf16/three-op"}
    assert runner.invoke(app, ["compare", str(base), new]).exit_code == 0


@pytest.mark.parametrize("row, key", [
    ({"case_id": "a", "status": "ok"}, "group_id"),
    ({"case_id": "a", "status": "ok", "group_id": "g", "preset": "p", "pass": "fwd"}, "provider"),
])
def test_malformed_results_files_are_one_line_errors(tmp_path, monkeypatch, capsys, row, key):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": 1, "results": [row]}))
    good = write(tmp_path, "good.json", results_doc(BASE))
    for args in (["bench", "--from", str(bad)], ["compare", good, str(bad)], ["compare", str(bad), good]):
        code, out, err = via_main(monkeypatch, capsys, args)
        assert code == 1 and out == "", err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert str(bad) in err and f"no key '{key}'" in err


def test_plot_with_a_file_type_matplotlib_cannot_write_fails_before_anything_runs(tmp_path, monkeypatch, capsys):
    good = write(tmp_path, "good.json", results_doc(BASE))
    plot = tmp_path / "p.xyz"
    # No GPU here: the plot error must come first, before the sweep would even look for one.
    for args in (["bench", "--from", good, "--plot", str(plot)], ["bench", "--preset", "fixed", "--plot", str(plot)]):
        code, out, err = via_main(monkeypatch, capsys, args)
        assert code == 1 and out == "", err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert f"--plot {plot}: matplotlib cannot write .xyz files" in err and ".png" in err and ".pdf" in err
    assert not plot.exists()
    r = runner.invoke(app, ["bench", "--from", good, "--plot", str(tmp_path / "p.SVG"), "--format", "json"])
    assert r.exit_code == 0, r.output  # suffixes are matched without case, as matplotlib does
    assert b"<svg" in (tmp_path / "p.SVG").read_bytes()[:500]


@pytest.mark.parametrize("flag, value", [("--seq", "4096"), ("--providers", "sparse"), ("--dtype", "bf16"),
                                         ("--pass", "fwd"), ("--batch", "2"), ("--head-dim", "64")])
def test_from_rejects_sweep_flags(tmp_path, monkeypatch, capsys, flag, value):
    good = write(tmp_path, "good.json", results_doc(BASE))
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--from", good, flag, value])
    assert code == 1 and out == "", err
    assert len(err.strip().splitlines()) == 1 and f"drop {flag}" in err
