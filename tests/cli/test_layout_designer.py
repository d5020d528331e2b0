"""The layout designer (issue 14) on the command line: the newer kinds, --from FILE, --vs."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sparsecli import (
    CausalSlidingWindowSparsityConfig,
    DilatedSparsityConfig,
    DocumentSparsityConfig,
    StreamingSparsityConfig,
)
from sparsecli.cli import app
from sparsecli.plumbing.errors import UserError

runner = CliRunner()


def _json(args):
    res = runner.invoke(app, [*args, "--format", "json"])
    assert res.exit_code == 0, (res.exception, res.output)
    return json.loads(res.output)


def _error(args, fragment):
    res = runner.invoke(app, args)
    assert isinstance(res.exception, UserError), (res.exception, res.output)
    assert "\n" not in str(res.exception) and fragment in str(res.exception), str(res.exception)


@pytest.mark.parametrize(
    "args, config",
    [
        (["causal_sliding_window", "--num-window-blocks", "3"], CausalSlidingWindowSparsityConfig(4, 32, 3)),
        (["streaming", "--num-sink-blocks", "2", "--num-window-blocks", "5"], StreamingSparsityConfig(4, 32, 2, 5)),
        (["dilated", "--num-local-blocks", "2", "--stride", "3", "--attention", "unidirectional"],
         DilatedSparsityConfig(4, 32, 2, 3, "unidirectional")),
        (["document", "--document-lengths", "1000,333,77"], DocumentSparsityConfig(4, 32, (1000, 333, 77))),
    ],
)
def test_newer_kinds_on_the_command_line(tmp_path, args, config):
    out = tmp_path / "l.npy"
    doc = _json(["layout", *args, "--seq", "2016", "--block", "32", "--heads", "4", "--save", str(out)])
    want = config.make_layout(2016)
    assert np.array_equal(np.load(out), want.numpy())
    assert doc["config"] == json.loads(json.dumps({"mode": config.kind, "num_heads": 4, **config.to_dict()}))
    r = doc["report"]
    assert r["kind"] == config.kind and r["nonzero_blocks"] == int(want.sum())
    assert r["unidirectional"] == config.unidirectional
    if config.kind == "document":  # 1000 and 1333 fall inside blocks 31 and 41; 1410 inside block 44
        assert r["straddling_blocks"] == 3
        assert any("3 blocks straddle a document boundary" in n for n in r["notes"])


@pytest.mark.parametrize("name", ["causal_sliding_window", "streaming", "dilated", "document", "streaming_random"])
def test_bundled_presets_of_the_newer_kinds(name):
    res = runner.invoke(app, ["layout", "--preset", name], env={"COLUMNS": "200"})
    assert res.exit_code == 0, (res.exception, res.output)
    assert "configuration" in res.output and "layers to full reach" in res.output
    if name == "streaming_random":
        assert "union(streaming, bigbird) layout" in res.output  # the report names the parts
        assert "union part 2" in res.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["layout", "streaming", "--num-sink-blocks", "0"], "num_sink_blocks must be >= 1, got 0"),
        (["layout", "causal_sliding_window", "--num-window-blocks", "-2"], "num_window_blocks must be >= 1"),
        (["layout", "dilated", "--stride", "0"], "stride must be >= 1"),
        (["layout", "document"], "document_lengths must list"),
        (["layout", "document", "--document-lengths", "100,0"], ">= 1, got 0"),
        (["layout", "document", "--document-lengths", "100,x"], "comma-separated"),
        (["layout", "streaming", "--stride", "2"], "--stride does not apply to streaming layouts (it is used by dilated)"),
        (["layout", "--preset", "streaming_random", "--num-sink-blocks", "2"], "edit the file"),
        (["layout", "streaming", "--from", "x.pt", "--block", "16"], "give one layout"),
        (["layout", "streaming", "--save", "x.png", "--plot", "-o", "x.png"], "--save takes a .pt, .npy or .npz path"),
        (["layout", "streaming", "--save", "x.npy", "--plot", "-o", "x.npy"], "cannot write a plot to x.npy"),
    ],
)
def test_bad_designer_arguments_are_one_line_errors(args, fragment):
    _error(args, fragment)


def test_union_preset_takes_block_and_heads_overrides():
    r = _json(["layout", "--preset", "streaming_random", "--block", "32", "--heads", "2", "--seq", "1024"])["report"]
    assert r["block"] == 32 and r["heads"] == 2 and r["num_blocks"] == 32 and r["kind"] == "union(streaming, bigbird)"


# -- --from FILE ------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".pt", ".npy"])
def test_from_round_trips_a_saved_layout(tmp_path, suffix):
    saved, png_a, png_b = tmp_path / f"l{suffix}", tmp_path / "a.png", tmp_path / "b.png"
    common = ["--plot", "--title", "same title", "--format", "json"]
    a = _json(["layout", "bigbird", "--seq", "2048", "--heads", "4", "--different-layout-per-head",
               "--save", str(saved), "-o", str(png_a), *common[:-2]])
    b = _json(["layout", "--from", str(saved), "--block", "16", "-o", str(png_b), *common[:-2]])
    ra, rb = a["report"], b["report"]
    assert rb["kind"] == saved.name and rb["config"] is None and b["config"] == {"file": str(saved), "block": 16, "attention": "bidirectional"}
    for key in ("kind", "config", "attention", "unidirectional", "future_blocks", "notes"):
        ra.pop(key), rb.pop(key)
    assert ra == rb
    assert png_a.read_bytes() == png_b.read_bytes()


def test_from_accepts_npz_and_single_head_files(tmp_path):
    lay = DilatedSparsityConfig(1, 64, 2, 3).make_layout(64 * 9)[0].bool().numpy()
    np.savez(tmp_path / "d.npz", layout=lay, other=np.zeros(1))
    r = _json(["layout", "--from", str(tmp_path / "d.npz"), "--block", "64"])["report"]
    assert r["heads"] == 1 and r["num_blocks"] == 9 and r["seq_len"] == 576 and r["nonzero_blocks"] == int(lay.sum())


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ([], "--from l.npy needs --block B"),
        (["--block", "16", "--heads", "4"], "--heads cannot change a layout read from a file"),
        (["--block", "16", "--num-random-blocks", "2"], "--num-random-blocks cannot change"),
        (["--block", "16", "--seq", "1024"], "--seq 1024 does not match"),
    ],
)
def test_from_rejects_flags_that_cannot_apply(tmp_path, monkeypatch, extra, fragment):
    monkeypatch.chdir(tmp_path)
    np.save("l.npy", np.eye(8, dtype=np.int64))
    _error(["layout", "--from", "l.npy", *extra], fragment)


def test_an_output_may_not_overwrite_the_input(tmp_path):
    np.save(tmp_path / "l.npy", np.eye(8, dtype=np.int64))
    _error(["layout", "--from", str(tmp_path / "l.npy"), "--block", "16", "--save", str(tmp_path / "l.npy")],
           "would overwrite the --from file")


def test_from_bad_files_are_one_line_errors(tmp_path):
    np.save(tmp_path / "bad.npy", np.full((2, 3, 3), 7))
    _error(["layout", "--from", str(tmp_path / "bad.npy"), "--block", "16"], "a layout holds only 0 and 1")
    _error(["layout", "--from", str(tmp_path / "none.pt"), "--block", "16"], "no such file")


# -- --vs -------------------------------------------------------------------------------------

def test_vs_reports_both_and_counts_the_difference(tmp_path):
    png = tmp_path / "d.png"
    doc = _json(["layout", "streaming", "--vs", "causal_sliding_window", "--seq", "1024", "--heads", "2",
                 "--num-window-blocks", "4", "--plot", "-o", str(png)])
    a = StreamingSparsityConfig(2, 16, 1, 4).make_layout(1024).bool()
    b = CausalSlidingWindowSparsityConfig(2, 16, 4).make_layout(1024).bool()
    assert doc["difference"] == {"only_a": int((a & ~b).sum()), "only_b": int((b & ~a).sum()),
                                 "both": int((a & b).sum()), "heads_differing": 2, "heads": 2, "total": 2 * 64 * 64}
    assert doc["difference"]["only_b"] == 0 and doc["difference"]["only_a"] > 0  # the sinks
    assert doc["a"]["report"]["kind"] == "streaming" and doc["b"]["report"]["kind"] == "causal_sliding_window"
    assert doc["b"]["sources"]["num_heads"] == "flag" and doc["b"]["sources"]["block"] == "as A"
    assert png.stat().st_size > 10_000 and doc["files"]["plot"] == str(png)


def test_vs_table_puts_the_reports_side_by_side():
    res = runner.invoke(app, ["layout", "dilated", "--vs", "streaming", "--seq", "1024"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, (res.exception, res.output)
    lines = res.output.splitlines()
    assert any("A: dilated" in line and "B: streaming" in line for line in lines)
    assert any(line.count("density") == 2 for line in lines)
    assert "only in A (dilated)" in res.output and "only in B (streaming)" in res.output


def test_vs_a_preset_and_a_file(tmp_path):
    saved = tmp_path / "s.pt"
    runner.invoke(app, ["layout", "--preset", "streaming", "--save", str(saved)])
    doc = _json(["layout", "--preset", "streaming", "--vs", str(saved)])
    assert doc["difference"]["only_a"] == doc["difference"]["only_b"] == 0
    _error(["layout", "--preset", "streaming", "--vs", "causal_sliding_window.yaml"],
           "A has 128 blocks of 64 (8192 tokens), B 64 of 128 (8192 tokens): compare layouts of one sequence length "
           "and block; give both one block with --block")
    doc = _json(["layout", "--preset", "streaming", "--vs", "causal_sliding_window.yaml", "--block", "64",
                 "--heads", "16"])
    assert doc["b"]["report"]["block"] == 64 and doc["b"]["report"]["seq_len"] == 8192  # A's sequence
    assert doc["b"]["config"]["num_window_blocks"] == 32 and doc["b"]["sources"]["num_window_blocks"] == "preset"
