"""`sparsecli info`: a call it cannot describe is a one-line error, and its help reads as sentences.

``info --block 48`` (or 0, or ``--seq -1``, ``--head-dim 0``) used to exit 0 and describe the
examples instead: the values were silently dropped, and a user took the answer for theirs.
"""
import sys

import pytest
from typer.testing import CliRunner

from sparsecli.cli import app, main


def via_main(monkeypatch, capsys, args):
    monkeypatch.setattr(sys, "argv", ["sparsecli", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.mark.parametrize("args, match", [
    # The commands: each one names the flag at fault.
    (["--block", "0", "--head-dim", "-8"], "--block 0"),
    (["--block", "48"], "--block 48: the kernels take blocks of 16, 32, 64 or 128"),
    (["--seq", "-1"], "--seq describes one call: add its --block"),
    (["--head-dim", "0"], "--head-dim describes one call: add its --block"),
    # With --block, each value the kernels do not take.
    (["--block", "-64"], "--block -64"),
    (["--block", "64", "--seq", "-1"], "--seq -1: a call has at least one token"),
    (["--block", "64", "--kv-seq", "0"], "--kv-seq 0: a call has at least one token"),
    (["--block", "64", "--head-dim", "0"],
     "--head-dim 0: the kernels take head dims that are a multiple of 8 from 8 to 256"),
    (["--block", "64", "--head-dim", "100"], "--head-dim 100"),
    (["--block", "64", "--head-dim", "264"], "--head-dim 264"),
    (["--block", "64", "--head-dim", "-8"], "--head-dim -8"),
    (["--block", "64", "--dtype", "fp8"], "--dtype fp8: use one of bf16, fp16, fp32"),
    # A call option alone describes no call: it was silently dropped for the examples.
    (["--head-dim", "96"], "--head-dim describes one call: add its --block"),
    (["--seq", "1024", "--segments"], "--seq/--segments describe one call: add its --block"),
])
def test_a_call_the_kernels_do_not_take_is_a_one_line_error(monkeypatch, capsys, args, match):
    code, out, err = via_main(monkeypatch, capsys, ["info", *args])
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], err


@pytest.mark.parametrize("args", [["--block", "16", "--head-dim", "8"], ["--block", "128", "--head-dim", "256"],
                                  ["--block", "64", "--head-dim", "96", "--seq", "1", "--kv-seq", "32768"]])
def test_calls_the_kernels_take_are_described(args):
    r = CliRunner().invoke(app, ["info", "--json", *args])
    assert r.exit_code == 0, r.output
    assert '"attention_calls"' in r.stdout


def test_help_paragraphs_are_not_broken_mid_sentence(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    r = CliRunner().invoke(app, ["info", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    lines = [line.strip(" │") for line in r.stdout.splitlines()]
    # At 200 columns every paragraph of the description fits on one line: a line that ends in
    # the middle of a sentence (the docstring's own line break) shows as a continuation.
    text = [line for line in lines if line and not line.startswith(("-", "Usage", "╭", "╰"))]
    broken = [a for a, b in zip(text, text[1:]) if not a.endswith((".", ":")) and b[:1].islower()]
    assert not broken, f"help text breaks a sentence after {broken!r}"
