"""The defects a new user hit in `sparsecli layout` and `presets` (issue 10), one test each."""
import errno
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparsecli.plumbing import output_files
from sparsecli.cli import app
from sparsecli.plumbing.errors import UserError
from tests.full_disk import full_disk  # noqa: F401  (fixture)

runner = CliRunner()


def _via_main(args, env=None, **kw):
    return subprocess.run([sys.executable, "-c", "from sparsecli.cli import main; main()", *args],
                          capture_output=True, timeout=300, env={**os.environ, **(env or {})}, **kw)


def _one_line_error(res, fragment):
    """In-process runs raise the UserError that ``main`` prints as one line with exit code 1."""
    assert isinstance(res.exception, UserError), (res.exception, res.output)
    msg = str(res.exception)
    assert "\n" not in msg and fragment in msg, msg


# -- writes are atomic ------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--save", "l.pt"], ["--save", "l.npy"], ["--plot", "-o", "l.png"]])
def test_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch, full_disk, args):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["layout", "fixed", "--seq", "512", *args])
    _one_line_error(res, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_saving_over_an_existing_file_keeps_it_when_the_write_fails(tmp_path, monkeypatch, full_disk):
    target = tmp_path / "l.pt"
    target.write_bytes(b"previous layout")
    res = runner.invoke(app, ["layout", "fixed", "--seq", "512", "--save", str(target)])
    _one_line_error(res, "No space left on device")
    assert target.read_bytes() == b"previous layout" and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("where, fragment", [("dir", "is a directory"), ("fifo", "not a regular file"),
                                             ("read-only", "Permission denied")])
def test_unwritable_save_targets_are_one_line_errors(tmp_path, monkeypatch, where, fragment):
    target = tmp_path / "l.pt"
    if where == "dir":
        target.mkdir()
    if where == "fifo":  # renaming over it would replace the node (think /dev/full)
        os.mkfifo(target)
    if where == "read-only":  # tests run as root, which ignores permission bits: refuse as the kernel would
        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        monkeypatch.setattr(output_files.tempfile, "mkstemp", refuse)
    res = runner.invoke(app, ["layout", "fixed", "--seq", "512", "--save", str(target)])
    _one_line_error(res, fragment)
    assert [p.name for p in tmp_path.iterdir()] == (["l.pt"] if where != "read-only" else [])


def test_save_writes_exactly_the_path_it_reports(tmp_path):
    target = tmp_path / "x.NPY"
    res = runner.invoke(app, ["layout", "fixed", "--seq", "512", "--save", str(target)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.NPY", "x.NPY.json"]  # numpy.save(name) wrote x.NPY.npy
    assert f"wrote layout: {target}" in res.output.replace("\n", "")
    assert np.load(target).shape == (16, 32, 32)


# -- presets show, errors, --help, --version, encodings ----------------------------------------

def test_presets_show_prints_the_files_exact_bytes(tmp_path):
    from importlib import resources

    want = resources.files("sparsecli.presets").joinpath("bigbird.yaml").read_bytes()
    proc = _via_main(["presets", "show", "bigbird"], env={"COLUMNS": "80"})
    assert proc.returncode == 0 and proc.stdout == want  # no wrapping at 80 columns, no blank line added
    mine = tmp_path / "mine.yaml"
    mine.write_bytes(want.replace(b"num_heads: 16", b"num_heads: 8  # a comment, kept"))
    proc = _via_main(["presets", "show", str(mine)])
    assert proc.stdout == mine.read_bytes()


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["layout", "bigbird", "--num-global-blocks", "-2"], "num_global_blocks must be >= 0, got -2"),
        (["layout", "bigbird", "--num-sliding-window-blocks", "-3"], "num_sliding_window_blocks must be >= 0"),
        (["layout", "variable", "--local-window-blocks", "-4"], "local_window_blocks must be >= 0, got -4"),
        (["layout", "bslongformer", "--num-sliding-window-blocks", "-1"], "must be >= 0"),
        (["layout", "local_sliding_window", "--num-sliding-window-blocks", "-1"], "must be >= 0"),
        (["presets", "show", "."], "is a directory"),
        (["layout", "--preset", "/dev/null"], "the file is empty"),
        (["presets", "show"], "presets show takes one NAME"),
    ],
)
def test_nonsense_values_are_one_line_errors(args, fragment):
    proc = _via_main(args)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and fragment in err


def test_duplicate_preset_keys_are_rejected_on_the_command_line(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("sparsity:\n  mode: bigbird\n  num_heads: 4\n  num_random_blocks: 1\n  num_random_blocks: 2\n")
    proc = _via_main(["layout", "--preset", str(path)])
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == (f"error: {path}: sparsity.num_random_blocks: appears twice "
                                            "(lines 4 and 5); keep one")


def test_help_shows_every_default():
    proc = _via_main(["layout", "--help"], env={"COLUMNS": "300"})
    rows = [line for line in proc.stdout.decode().splitlines() if line.startswith("│ -")]
    assert len(rows) > 25
    for row in rows:
        if not row.startswith("│ --help"):
            assert "[default:" in row, row
    text = " ".join(rows)
    for fragment in ("Sequence length in tokens. [default: (the preset's, else 4096)]",
                     "[default: (the preset's, else 16)]", "[default: (the preset's seed, else 0)]",
                     "[default: (KIND_seqN_bB.png)]", "[default: (variable 0, bigbird 1)]"):
        assert fragment in text


def test_version():
    proc = _via_main(["--version"])
    from sparsecli import __version__

    assert proc.returncode == 0 and proc.stdout.decode() == f"sparsecli {__version__}\n"


@pytest.mark.parametrize("args", [["layout", "bigbird", "--seq", "1024"], ["layout", "--preset", "document"],
                                  ["layout", "streaming", "--vs", "causal_sliding_window", "--seq", "1024"],
                                  ["presets"]])
def test_an_ascii_terminal_degrades_instead_of_crashing(tmp_path, args):
    proc = _via_main(args, env={"PYTHONIOENCODING": "ascii"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    proc.stdout.decode("ascii")  # every character encodable
    assert b"density" in proc.stdout or b"bundled presets" in proc.stdout


# -- what the report says ----------------------------------------------------------------------

def test_the_report_echoes_every_parameter_and_where_it_came_from(tmp_path):
    res = runner.invoke(app, ["layout", "bigbird", "--seq", "2048", "--block", "64", "--format", "json"])
    doc = json.loads(res.output)
    assert doc["config"] == {"mode": "bigbird", "num_heads": 16, "block": 64, "different_layout_per_head": False,
                             "num_random_blocks": 1, "num_sliding_window_blocks": 3, "num_global_blocks": 1,
                             "attention": "bidirectional"}
    assert doc["sources"]["block"] == "flag" and doc["sources"]["num_random_blocks"] == "class default"
    path = tmp_path / "bb.yaml"
    path.write_text("sparsity:\n  mode: bigbird\n  num_heads: 16\n  block: 64\n")
    res = runner.invoke(app, ["layout", "--preset", str(path), "--seq", "2048"], env={"COLUMNS": "200"})
    table = res.output
    assert "configuration" in table
    assert any("num_random_blocks" in line and " 0 " in line and "DeepSpeed JSON-parser default" in line
               for line in table.splitlines())  # why the preset gives 1.94% where the CLI gives 2.33%
    res = runner.invoke(app, ["layout", "bigbird", "--seq", "2048", "--block", "64"], env={"COLUMNS": "200"})
    assert any("num_random_blocks" in line and " 1 " in line and "class default" in line
               for line in res.output.splitlines())


def test_the_report_names_ignored_global_indices():
    res = runner.invoke(app, ["layout", "bslongformer", "--seq", "512", "--global-block-indices", "0,40,7",
                              "--format", "json"])
    notes = json.loads(res.output)["report"]["notes"]
    assert "global_block_indices 40 ignored: past the last block (31), as in DeepSpeed" in notes


@pytest.mark.parametrize("block", ["8", "48", "256"])
def test_blocks_the_kernels_reject_are_said_so(block):
    res = runner.invoke(app, ["layout", "fixed", "--seq", "3072", "--block", block, "--format", "json"])
    r = json.loads(res.output)["report"]
    assert r["tile_density"] == {"64": None, "128": None}
    assert any("kernels take blocks of 16, 32, 64, 128 only" in n for n in r["notes"])


def test_reach_with_many_distinct_heads_is_computed_quickly():
    start = time.perf_counter()
    res = runner.invoke(app, ["layout", "bigbird", "--seq", "16384", "--heads", "64", "--different-layout-per-head",
                              "--format", "json"])
    elapsed = time.perf_counter() - start
    r = json.loads(res.output)["report"]
    assert r["distinct_head_layouts"] == 64 and r["layers_to_full_reach"] == 2
    assert elapsed < 30, elapsed  # the whole command, layout included; the reach part alone is test_analysis's


def test_memory_guard_uses_the_estimator(monkeypatch):
    from sparsecli.layouts import memory as layout_memory

    monkeypatch.setattr(layout_memory, "available_bytes", lambda: 2**30)
    res = runner.invoke(app, ["layout", "fixed", "--seq", "65536", "--heads", "16"])
    _one_line_error(res, "need about 2.5 GiB and 1.0 GiB is available")
