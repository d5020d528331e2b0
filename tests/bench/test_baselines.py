"""Per-GPU baselines: like-for-like selection from a directory, the cross-GPU refusal and its
override (bench and compare), --update-baseline into the runner's file, and the git SHA source."""
import json
import os
import subprocess

import pytest
from typer.testing import CliRunner

from sparsecli.bench import baselines
from sparsecli.bench import results as res
from sparsecli.bench.compare import make_baseline
from sparsecli.cli import app
from sparsecli.plumbing.output_files import write_text_atomic

from .conftest import results_doc
from .test_cli_bench import via_main

runner = CliRunner()
TIMES = {"sparse": 0.5, "three-op": 1.5, "sdpa-flash": 1.0}
H100, H200 = "NVIDIA H100 80GB HBM3", "NVIDIA H200"


def doc_on(gpu, times=TIMES):
    doc = results_doc(times)
    doc["env"] = {"gpu": gpu, "capability": "9.0"}
    return doc


@pytest.fixture
def fleet(tmp_path):
    """benchmarks/baselines-like directory with an H100 and an H200 baseline; an H200 run."""
    d = tmp_path / "baselines"
    d.mkdir()
    write_text_atomic(d / "nvidia-h100-80gb-hbm3.json", res.to_json(make_baseline(doc_on(H100, dict(TIMES, sparse=0.7)))))
    write_text_atomic(d / "nvidia-h200.json", res.to_json(make_baseline(doc_on(H200))))
    run = write_text_atomic(tmp_path / "run.json", res.to_json(doc_on(H200)))
    return d, run


def test_gpu_slugs_name_files():
    assert baselines.gpu_slug(H100) == "nvidia-h100-80gb-hbm3"
    assert baselines.gpu_slug(" NVIDIA H200 ") == "nvidia-h200"
    assert baselines.gpu_slug("AMD Instinct MI300X (gfx942)") == "amd-instinct-mi300x-gfx942"


@pytest.mark.parametrize("command", ["bench", "compare"])
def test_a_directory_gates_against_the_runners_gpu(fleet, command):
    d, run = fleet
    args = ["bench", "--from", str(run), "--baseline", str(d)] if command == "bench" else ["compare", str(d), str(run)]
    r = runner.invoke(app, [*args, "--format", "json"])
    assert r.exit_code == 0, r.output  # the H200 file, not the H100 one (whose sparse ratio is 0.7)
    report = json.loads(r.stdout)
    report = report["gate_report"] if command == "bench" else report
    assert report["baseline"].endswith("nvidia-h200.json") and report["counts"] == {"pass": 2}


@pytest.mark.parametrize("command", ["bench", "compare"])
def test_another_gpus_baseline_is_refused_with_one_line_naming_both(fleet, monkeypatch, capsys, command):
    d, run = fleet
    h100 = str(d / "nvidia-h100-80gb-hbm3.json")
    args = ["bench", "--from", str(run), "--baseline", h100] if command == "bench" else ["compare", h100, str(run)]
    code, out, err = via_main(monkeypatch, capsys, args)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1
    assert f"was measured on {H100}, this run on {H200}" in err and "--allow-gpu-mismatch" in err
    code, out, err = via_main(monkeypatch, capsys, [*args, "--allow-gpu-mismatch"])
    assert code == 3 and "stale" in out  # compared anyway: the H100's ratio differs, as it would


def test_a_directory_without_the_runners_gpu_says_how_to_record_it(fleet, monkeypatch, capsys):
    d, run = fleet
    (d / "nvidia-h200.json").unlink()
    code, out, err = via_main(monkeypatch, capsys, ["compare", str(d), str(run)])
    assert code == 1 and f"{d} has no baseline for {H200} (nvidia-h200.json)" in err
    assert "--update-baseline" in err


def test_update_baseline_writes_the_runners_file_and_refuses_anothers(fleet, monkeypatch, capsys):
    d, run = fleet
    (d / "nvidia-h200.json").unlink()
    r = runner.invoke(app, ["bench", "--from", str(run), "--baseline", str(d), "--update-baseline"])
    assert r.exit_code == 0, r.output
    written = res.load(d / "nvidia-h200.json")
    assert written["env"]["gpu"] == H200 and len(written["gate"]) == 2
    assert json.loads((d / "nvidia-h100-80gb-hbm3.json").read_text())["env"]["gpu"] == H100  # untouched
    code, out, err = via_main(monkeypatch, capsys, ["bench", "--from", str(run), "--update-baseline",
                                                    "--baseline", str(d / "nvidia-h100-80gb-hbm3.json")])
    assert code == 1 and "was measured on" in err  # an H200 run never merges into the H100 file


def test_results_without_a_gpu_cannot_pick_a_baseline(fleet, monkeypatch, capsys):
    d, _ = fleet
    doc = doc_on(None)
    path = write_text_atomic(d.parent / "nogpu.json", res.to_json(doc))
    code, out, err = via_main(monkeypatch, capsys, ["compare", str(d), str(path)])
    assert code == 1 and "records no GPU model" in err


# -- env.git_sha ---------------------------------------------------------------------------

def git(cwd, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def repo_with(tmp_path, name, track_package: bool):
    root = tmp_path / name
    pkg = root / "lib" / "sparsecli"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (root / "README").write_text("x")
    git(root, "init", "-q")
    git(root, "add", "README", *(["lib/sparsecli/__init__.py"] if track_package else []))
    git(root, "commit", "-qm", "init")
    return root, pkg


def test_git_sha_is_the_packages_own_checkout_never_the_callers(tmp_path, monkeypatch):
    root, pkg = repo_with(tmp_path, "checkout", track_package=True)
    assert res.git_sha(pkg) == git(root, "rev-parse", "HEAD")
    (pkg / "__init__.py").write_text("# edited\n")
    assert res.git_sha(pkg) == git(root, "rev-parse", "HEAD") + "-dirty"
    # A wheel installed in a virtual environment inside someone else's repository: not tracked there.
    other, vendored = repo_with(tmp_path, "someone-else", track_package=False)
    assert res.git_sha(vendored) is None
    # The caller's directory and GIT_DIR never leak in.
    monkeypatch.chdir(other)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert res.git_sha(pkg) == git(root, "rev-parse", "HEAD") + "-dirty"
    assert res.git_sha(tmp_path) is None  # not a repository at all


def test_committed_baselines_are_named_by_their_gpu():
    from pathlib import Path

    directory = Path(__file__).resolve().parents[2] / "benchmarks" / "baselines"
    files = sorted(directory.glob("*.json"))
    assert files, "no committed baselines"
    for f in files:
        doc = res.load(f)
        assert f.name == baselines.gpu_slug(doc["env"]["gpu"]) + ".json" and doc["gate"]
