"""`sparsecli layout` and `sparsecli presets` through Typer's CliRunner, plus start-up cost."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparsecli.cli import app

runner = CliRunner()


def _via_main(args):
    proc = subprocess.run([sys.executable, "-c", "from sparsecli.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)
    return proc


def test_main_job_writes_png_and_report(tmp_path):
    out = tmp_path / "bb.png"
    res = runner.invoke(app, ["layout", "bigbird", "--seq", "4096", "--plot", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.stat().st_size > 10_000
    assert "density" in res.output and "layers to full reach" in res.output


def test_json_report_is_machine_readable(tmp_path):
    res = runner.invoke(app, ["layout", "fixed", "--seq", "1024", "--block", "32", "--heads", "4",
                              "--attention", "unidirectional", "--num-global-blocks", "2", "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    r = doc["report"]
    assert doc["config"]["mode"] == "fixed" and doc["config"]["num_global_blocks"] == 2
    assert r["num_blocks"] == 32 and r["heads"] == 4
    assert r["future_blocks"] > 0  # DeepSpeed's unidirectional Fixed leak is reported
    assert any("future" in n for n in r["notes"])


def test_preset_with_overrides_and_save(tmp_path):
    npy, pt = tmp_path / "l.npy", tmp_path / "l.pt"
    res = runner.invoke(app, ["layout", "--preset", "bigbird", "--seq", "2048", "--num-random-blocks", "1",
                              "--save", str(npy), "--format", "json"])
    assert res.exit_code == 0, res.output
    arr = np.load(npy)
    assert arr.shape == (16, 32, 32)
    res = runner.invoke(app, ["layout", "--preset", "bigbird", "--seq", "2048", "--num-random-blocks", "1", "--save", str(pt)])
    assert res.exit_code == 0
    saved = torch.load(pt)  # the layout with its attention mode
    assert torch.equal(saved["layout"], torch.from_numpy(arr)) and saved["attention"] == "bidirectional"


def test_head_option_and_sliding_window(tmp_path):
    res = runner.invoke(app, ["layout", "local_sliding_window", "--seq", "512", "--head", "3"])
    assert res.exit_code == 0, res.output
    assert "head 3" in res.output


def test_presets_list_and_show():
    res = runner.invoke(app, ["presets"])
    assert res.exit_code == 0 and "sliding_window" in res.output and "bslongformer" in res.output
    res = runner.invoke(app, ["presets", "show", "fixed"])
    assert res.exit_code == 0 and "num_local_blocks" in res.output


@pytest.mark.parametrize(
    "args, fragment, code",
    [
        (["layout", "bigbrd"], "bigbrd", 2),
        (["layout", "bigbird", "--seq", "4100"], "dividable", 1),
        (["layout", "bigbird", "--seq", "0"], "--seq", 1),
        (["layout", "bigbird", "--seq", "-64"], "--seq", 1),
        (["layout", "bigbird", "--seq", "256", "--num-random-blocks", "40"], "random blocks", 1),
        (["layout", "bigbird", "--num-local-blocks", "4"], "does not apply", 1),
        (["layout", "--preset", "nope"], "no such file", 1),
        (["layout", "bigbird", "--plot", "-o", "/nonexistent/dir/x.png"], "directory /nonexistent/dir does not exist", 1),
        (["layout", "bigbird", "--save", "x.csv"], ".pt, .npy or .npz", 1),
        (["layout", "variable", "--local-window-blocks", "4,x"], "comma-separated", 1),
        (["presets", "show", "nope"], "no such file", 1),
        (["layout", "dense", "--seq", "16777216"], "GiB", 1),
        (["layout", "fixed", "--seq", "256", "--plot", "-o", "x.txt"], "cannot write a plot", 1),
        (["layout", "local_sliding_window", "--attention", "causal"], "causal", 2),
        (["layout", "fixed", "-o", "x.png"], "add --plot", 1),
    ],
)
def test_errors_are_one_line_without_traceback(args, fragment, code):
    proc = _via_main(args)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert fragment in proc.stderr
    if code == 1:
        assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "text, fragment",
    [("sparsity: [", "not valid YAML"), ("", "empty"), ("- a\n", "mapping"),
     ("sparsity:\n  mode: fixed\n  num_heads: 2\n  colour: red\n", "unknown key"),
     ("sparsity:\n  mode: fixed\n  num_heads: 2.5\n", "expected int")],
)
def test_bad_preset_files(tmp_path, text, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = _via_main(["layout", "--preset", str(path)])
    assert proc.returncode == 1
    assert str(path) in proc.stderr and fragment in proc.stderr and "Traceback" not in proc.stderr


def test_help_imports_no_heavy_modules():
    code = ("import sys; from sparsecli.cli import app; "
            "print(sorted(m for m in ('torch', 'triton', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    proc = subprocess.run([sys.executable, "-c", "from sparsecli.cli import main; main()", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "layout" in proc.stdout


def test_info_reports_versions_and_cpu_path():
    res = runner.invoke(app, ["info", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["torch"] and doc["sparsecli"]
    assert doc["benchmark"] in ("available", "needs a CUDA GPU")


def test_preset_seed_is_the_default_seed(tmp_path):
    import random

    from sparsecli import VariableSparsityConfig

    path = tmp_path / "v.yaml"
    path.write_text("seed: 7\nseq_len: 1024\nsparsity:\n  mode: variable\n  num_heads: 2\n  num_random_blocks: 2\n")
    out = tmp_path / "l.npy"
    res = runner.invoke(app, ["layout", "--preset", str(path), "--save", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["seed"] == 7
    random.seed(7)
    want = VariableSparsityConfig(2, num_random_blocks=2).make_layout(1024)
    assert np.array_equal(np.load(out), want.numpy())
    res = runner.invoke(app, ["layout", "--preset", str(path), "--seed", "3", "--format", "json"])
    assert json.loads(res.output)["seed"] == 3


def test_loose_sliding_window_attention_is_reported_as_deepspeed_builds_it():
    from sparsecli import LocalSlidingWindowSparsityConfig
    from sparsecli.analysis.report import analyze

    config = LocalSlidingWindowSparsityConfig(2, 16, attention="causal")  # DeepSpeed: unidirectional
    r = analyze(config.make_layout(512), 16, config.kind, config.attention, unidirectional=config.unidirectional)
    assert r.unidirectional and r.future_blocks == 0 and r.layers_to_full_reach == 31
