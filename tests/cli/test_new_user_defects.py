"""The defects a new user hit on the command line (issue 21, "What a new user hit"), one test or
more each; the defect number of the issue's list is in each test's comment."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from sparsecli.bench.worker import plan_of
from sparsecli.cli import app
from sparsecli.layouts.files import load_layout
from sparsecli.plumbing.errors import UserError

runner = CliRunner()


def _via_main(args, env=None, **kw):
    return subprocess.run([sys.executable, "-c", "from sparsecli.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, **kw)


def _json(args):
    res = runner.invoke(app, [*args, "--format", "json"])
    assert res.exit_code == 0, (res.exception, res.output)
    return json.loads(res.stdout)


def _error(args, fragment):
    res = runner.invoke(app, args)
    assert isinstance(res.exception, UserError), (res.exception, res.output)
    msg = str(res.exception)
    assert "\n" not in msg and fragment in msg, msg
    return msg


# -- 1. a saved layout keeps its attention mode ---------------------------------------------------

CAUSAL = [(["streaming", "--seq", "2048", "--block", "64", "--heads", "4"], 64),
          (["--preset", "dilated", "--seq", "2048", "--heads", "4"], 64)]


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".npz"])
@pytest.mark.parametrize("args, block", CAUSAL)
def test_a_saved_causal_layout_reads_back_causal(tmp_path, suffix, args, block):
    saved = tmp_path / f"s{suffix}"
    original = _json(["layout", *args, "--save", str(saved)])["report"]
    assert original["unidirectional"] and original["layers_to_full_reach"] is not None
    doc = _json(["layout", "--from", str(saved), "--block", str(block)])
    back = doc["report"]
    for key in ("unidirectional", "future_blocks", "layers_to_full_reach", "full_reach_never", "density"):
        assert back[key] == original[key], key
    assert doc["config"]["attention"] == "unidirectional" and doc["sources"]["attention"] == "file"


def test_attention_overrides_what_the_file_says(tmp_path):
    saved = tmp_path / "s.pt"
    _json(["layout", "streaming", "--seq", "2048", "--block", "64", "--heads", "4", "--save", str(saved)])
    doc = _json(["layout", "--from", str(saved), "--block", "64", "--attention", "bidirectional"])
    assert not doc["report"]["unidirectional"] and doc["report"]["future_blocks"] is None
    assert doc["report"]["full_reach_never"] and doc["sources"]["attention"] == "flag"
    old = tmp_path / "old.pt"  # a file of before the attention field: bidirectional unless told
    torch.save(load_layout(saved), old)
    assert not _json(["layout", "--from", str(old), "--block", "64"])["report"]["unidirectional"]
    doc = _json(["layout", "--from", str(old), "--block", "64", "--attention", "unidirectional"])
    assert doc["report"]["unidirectional"] and doc["report"]["layers_to_full_reach"] == 10


def test_saving_a_bidirectional_layout_over_a_causal_one_leaves_no_stale_mode(tmp_path):
    saved = tmp_path / "s.npy"
    _json(["layout", "streaming", "--seq", "1024", "--save", str(saved)])
    _json(["layout", "bigbird", "--seq", "1024", "--save", str(saved)])
    assert not _json(["layout", "--from", str(saved), "--block", "16"])["report"]["unidirectional"]


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_bench_plans_a_saved_causal_layout_causal(tmp_path, suffix):
    saved = tmp_path / f"dl{suffix}"
    _json(["layout", "--preset", "dilated", "--seq", "4096", "--save", str(saved)])

    def planned(*extra):
        res = runner.invoke(app, ["bench", "--layout", str(saved), "--block", "64", "--dry-run", "--format", "json",
                                  "--providers", "sparse", *extra])
        assert res.exit_code == 0, (res.exception, res.output)
        return json.loads(res.stdout)["planned"]

    preset = runner.invoke(app, ["bench", "--preset", "dilated", "--dry-run", "--format", "json", "--seq", "4096",
                                 "--providers", "sparse"])
    assert {p["causal"] for p in json.loads(preset.stdout)["planned"]} == {True}
    assert {p["causal"] for p in planned()} == {True}
    assert {p["causal"] for p in planned("--attention", "bidirectional")} == {False}
    for attention, causal in ((None, True), ("bidirectional", False)):  # a --devices worker plans the same
        spec = {"presets": [], "layout": {"path": str(saved), "block": 64, "attention": attention},
                "overrides": {"providers": ["sparse"]}, "case_ids": [c["case_id"] for c in planned()] +
                [c["case_id"] for c in planned("--attention", "bidirectional")]}
        assert {c.shape.causal for c in plan_of(spec).cases} == {causal}


# -- 2. a block must be positive --------------------------------------------------------------------

@pytest.mark.parametrize("block", ["0", "-64"])
def test_from_with_a_block_below_one_is_an_error(tmp_path, block):
    np.save(tmp_path / "l.npy", np.eye(8, dtype=np.int64))
    _error(["layout", "--from", str(tmp_path / "l.npy"), "--block", block],
           f"--block must be a positive number of tokens, got {block}")


# -- 3. no silently dropped list entries ------------------------------------------------------------

@pytest.mark.parametrize("text", ["4,,8", "4,8,", ",4"])
def test_an_empty_list_entry_is_an_error(text):
    _error(["layout", "variable", "--local-window-blocks", text], f"--local-window-blocks {text!r} has an empty entry")


# -- 4. --vs with a file ---------------------------------------------------------------------------

def test_a_kind_compared_with_a_file_takes_the_files_heads(tmp_path):
    saved = tmp_path / "s.pt"
    _json(["layout", "streaming", "--seq", "2048", "--block", "64", "--heads", "4", "--save", str(saved)])
    doc = _json(["layout", "--from", str(saved), "--block", "64", "--vs", "streaming"])
    assert doc["b"]["report"]["heads"] == 4 and doc["b"]["sources"]["num_heads"] == "as A"
    assert doc["difference"]["only_a"] == doc["difference"]["only_b"] == 0


def test_a_file_of_another_length_names_seq_as_the_fix(tmp_path):
    saved = tmp_path / "s.pt"
    _json(["layout", "streaming", "--seq", "2048", "--block", "64", "--save", str(saved)])
    msg = _error(["layout", "--preset", "streaming", "--vs", str(saved)], "set --seq 2048")
    assert "--block" not in msg


# -- 5. did-you-mean for a misspelt num_heads -------------------------------------------------------

def test_a_misspelt_num_heads_gets_a_did_you_mean(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("sparsity:\n  mode: fixed\n  num_head: 16\n")
    _error(["layout", "--preset", str(path)], "sparsity.num_head: unknown key (did you mean 'num_heads'?)")


# -- 6. presets list, and a union preset's PNG -------------------------------------------------------

def test_presets_list_lists_like_bare_presets():
    bare, listed = runner.invoke(app, ["presets"]), runner.invoke(app, ["presets", "list"])
    assert listed.exit_code == 0, listed.output
    assert listed.stdout == bare.stdout and "streaming_random" in listed.stdout


def test_a_union_presets_png_is_named_after_the_preset(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = _json(["layout", "--preset", "streaming_random", "--seq", "1024", "--plot"])
    assert doc["files"]["plot"] == "streaming_random_seq1024_b64.png"
    assert (tmp_path / "streaming_random_seq1024_b64.png").is_file()


# -- 7. no matplotlib glyph warnings -----------------------------------------------------------------

def test_a_title_the_font_lacks_gives_at_most_one_short_line(tmp_path):
    proc = _via_main(["layout", "bigbird", "--seq", "256", "--title", "注意", "--plot", "-o", "t.png"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("wrote plot:")]
    assert len(lines) <= 1, proc.stderr
    assert "UserWarning" not in proc.stderr and ".py:" not in proc.stderr and "Glyph" not in proc.stderr


# -- 8. --help at 80 columns ------------------------------------------------------------------------

def _flag_names(command: str) -> list[str]:
    click_command = typer.main.get_command(app).commands[command]
    return [name for p in click_command.params if not p.hidden for name in (*p.opts, *p.secondary_opts)
            if name.startswith("-")]


@pytest.mark.parametrize("columns", ["80", "120"])
@pytest.mark.parametrize("command", ["layout", "compare"])
def test_every_flag_name_reads_whole_in_help(command, columns):
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": columns})
    assert res.exit_code == 0, res.output
    words = set(res.stdout.replace("│", " ").replace(",", " ").split())
    names = _flag_names(command)
    assert len(names) > 3
    cut = [n for n in names if n not in words]
    assert not cut, cut
    assert "…" not in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= int(columns)


def test_the_hidden_no_switches_still_work_and_are_named_in_help():
    res = runner.invoke(app, ["layout", "--help"], env={"COLUMNS": "80"})
    assert "--no-different-layout-per-head" in res.stdout.replace("│", " ").split()
    on = _json(["layout", "bigbird", "--seq", "1024", "--heads", "4", "--different-layout-per-head"])
    off = _json(["layout", "bigbird", "--seq", "1024", "--heads", "4", "--no-different-layout-per-head"])
    assert on["config"]["different_layout_per_head"] and not off["config"]["different_layout_per_head"]
    assert off["sources"]["different_layout_per_head"] == "flag"
    res = runner.invoke(app, ["layout", "bigbird", "--different-layout-per-head", "--no-different-layout-per-head"])
    assert res.exit_code == 2 and "error:" in res.stderr


# -- 9. output lines at 80 columns, explicit COLUMNS, no trailing spaces -----------------------------

def test_wrote_lines_keep_a_long_path_whole(tmp_path):
    deep = tmp_path / ("a_rather_long_directory_name_" * 3)
    deep.mkdir()
    png, saved = deep / "heatmap_with_a_long_name.png", deep / "layout_with_a_long_name.npy"
    res = runner.invoke(app, ["layout", "bigbird", "--seq", "256", "--plot", "-o", str(png), "--save", str(saved)],
                        env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert f"wrote plot: {png}" in res.stderr.splitlines()
    assert f"wrote layout: {saved}" in res.stderr.splitlines()


def test_an_explicit_columns_is_respected_in_a_pipe():
    proc = _via_main(["presets"], env={"COLUMNS": "80"})
    assert proc.returncode == 0, proc.stderr
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    assert "streaming_random" in proc.stdout


@pytest.mark.parametrize("args", [["layout", "bigbird", "--seq", "1024"], ["presets"],
                                  ["layout", "dilated", "--vs", "streaming", "--seq", "1024"]])
def test_no_line_ends_in_spaces(args):
    for env in ({}, {"COLUMNS": "200"}):
        proc = _via_main(args, env=env)
        assert proc.returncode == 0, proc.stderr
        padded = [line for line in proc.stdout.splitlines() if line != line.rstrip()]
        assert not padded, padded[:3]


# -- 10. every parameter's source in JSON ------------------------------------------------------------

def test_json_sources_hold_every_parameter_the_table_shows():
    doc = _json(["layout", "bigbird", "--seq", "1024"])
    assert set(doc["sources"]) == set(doc["config"]) - {"mode"} | {"seed"}
    assert doc["sources"]["num_random_blocks"] == "class default" and doc["sources"]["seed"] == "class default"
    doc = _json(["layout", "bigbird", "--seq", "1024", "--block", "32"])
    assert doc["sources"]["block"] == "flag"


# -- 11. messages that name the right problem ----------------------------------------------------------

def test_a_text_file_named_npy_is_not_a_valid_npy_file(tmp_path):
    (tmp_path / "x.npy").write_text("0,1\n1,0\n")
    msg = _error(["layout", "--from", str(tmp_path / "x.npy"), "--block", "16"], "not a valid .npy file")
    assert "pickle" not in msg


def test_from_a_directory_says_it_is_a_directory(tmp_path):
    _error(["layout", "--from", str(tmp_path), "--block", "16"], "is a directory")


def test_save_under_a_file_says_the_file_is_not_a_directory(tmp_path):
    (tmp_path / "file.txt").write_text("x")
    _error(["layout", "bigbird", "--save", str(tmp_path / "file.txt" / "x.npy")],
           f"{tmp_path / 'file.txt'} is a file, not a directory")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["presets", "show", ""], "NAME is empty"),
        (["layout", "--preset", ""], "the preset name is empty"),
        (["layout", "bigbird", "--vs", ""], "--vs is empty"),
    ],
)
def test_an_empty_name_says_it_is_empty(args, fragment):
    _error(args, fragment)


@pytest.mark.parametrize(
    "args, name",
    [
        (["compare", "", "new.json"], "'BASE'"),
        (["layout", "bigbird", "--plot", "-o", ""], "'--output' / '-o'"),
        (["layout", "bigbird", "--save", ""], "'--save'"),
        (["layout", "--from", "", "--block", "16"], "'--from'"),
        (["bench", "--layout", "", "--block", "64", "--dry-run"], "'--layout'"),
    ],
)
def test_an_empty_path_says_it_is_empty(args, name):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, (res.exception, res.output)
    assert res.stderr.strip() == f"error: Invalid value for {name}: is empty; give a path"


def test_too_many_random_blocks_is_one_clean_message():
    msg = _error(["layout", "bigbird", "--num-random-blocks", "1000", "--seq", "256"], "num_random_blocks")
    assert "!" not in msg and "smaller than" not in msg
    assert "1000" in msg and "16" in msg and "at most 16" in msg


def test_document_notes_count_right():
    notes = _json(["layout", "document", "--seq", "1024", "--document-lengths", "1000,1000"])["report"]["notes"]
    assert "1 block straddles a document boundary: its tokens" in " ".join(notes)
    assert "document 1 is cut at the sequence end: 24 of its 1000 tokens remain" in notes


# -- 12. usage errors are one line --------------------------------------------------------------------

@pytest.mark.parametrize(
    "args, fragment",
    [
        (["layout", "bigbird", "--format", "xml"], "'xml' is not one of 'table', 'json'"),
        (["layout", "bigbird", "--seq", "abc"], "--seq"),
        (["layout", "bigbrd"], "bigbrd"),
        (["nosuch"], "No such command 'nosuch'"),
        (["compare", "a.json"], "Missing argument 'NEW'"),
        (["layout", "bigbird", "--sed", "1"], "No such option: --sed"),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args, fragment):
    proc = _via_main(args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], proc.stderr
    assert "Value error" not in lines[0]


def test_no_arguments_still_print_the_help():
    res = runner.invoke(app, ["layout"])
    assert "Usage: sparsecli layout" in res.output and "error:" not in res.output


# -- 13. compare's usage names its arguments plainly -------------------------------------------------

def test_compare_usage_shows_base_new():
    res = runner.invoke(app, ["compare", "--help"], env={"COLUMNS": "120"})
    assert "sparsecli compare [OPTIONS] BASE NEW" in res.stdout
    assert "{" not in res.stdout
