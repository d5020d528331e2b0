"""The stdout console: into a pipe, tables are laid out as wide as they need (every number kept)."""
import io
import re

import pytest
from rich.table import Table
from rich.text import Text

from sparsecli.cli.console import DataConsole


@pytest.fixture(autouse=True)
def no_columns(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)  # a shell that exports it would change the widths


def wide_table() -> Table:
    t = Table(title="t")
    t.add_column("case_id")
    for i in range(10):
        t.add_column(f"number {i}", justify="right")
    t.add_row("bigbird/fwd+bwd/S16384-B4-H16-D64-bf16/three-op", *[f"{1234.567 + i:.3f}" for i in range(10)])
    return t


def test_piped_tables_keep_every_cell_whatever_the_width():
    buf = io.StringIO()  # not a terminal, like `| cat` or a CI log
    DataConsole(file=buf, width=80).print(wide_table())
    text = buf.getvalue()
    assert "bigbird/fwd+bwd/S16384-B4-H16-D64-bf16/three-op" in text and "…" not in text
    assert all(f"{1234.567 + i:.3f}" in text for i in range(10))
    assert max(len(line) for line in text.splitlines()) > 80


def test_narrow_content_and_terminals_keep_their_width():
    buf = io.StringIO()
    console = DataConsole(file=buf, width=80)
    console.print(wide_table())
    assert console.width == 80  # restored after a wide print
    buf.truncate(0), buf.seek(0)
    console.print(Text("short"))
    assert buf.getvalue() == "short\n"
    term = DataConsole(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    term.print(wide_table())
    assert max(len(line) for line in term.file.getvalue().splitlines()) <= 80  # a terminal is fitted


def test_an_explicit_columns_wraps_prose_but_never_cuts_a_number(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    prose = Table("id", "description")
    prose.columns[0].no_wrap = True
    prose.add_row("streaming_random", "a description long enough to need wrapping " * 4)
    buf = io.StringIO()
    DataConsole(file=buf).print(prose)
    assert max(len(line) for line in buf.getvalue().splitlines()) == 80 and "streaming_random" in buf.getvalue()
    buf = io.StringIO()  # ten number columns do not fit in 80 without cutting: as wide as they need
    DataConsole(file=buf).print(wide_table())
    text = buf.getvalue()
    assert "bigbird/fwd+bwd/S16384-B4-H16-D64-bf16/three-op" in text and "…" not in text
    assert all(f"{1234.567 + i:.3f}" in text for i in range(10))


@pytest.mark.parametrize("terminal", [False, True])
def test_lines_carry_no_trailing_blanks(terminal):
    t = Table(title="a title wider than nothing", box=None, show_header=False)
    t.add_column(style="bold")
    t.add_column(style="dim")
    t.add_row("short", "x")
    t.add_row("a much longer cell", "a much longer value")
    console = DataConsole(file=io.StringIO(), width=80, force_terminal=terminal, color_system="standard")
    console.print(t)
    text = re.sub(r"\x1b\[[0-9;]*m", "", console.file.getvalue())
    assert "short" in text and "a much longer value" in text
    assert [line for line in text.splitlines() if line != line.rstrip()] == []
