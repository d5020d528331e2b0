"""``sparsecli`` command line: one module per command group, registered on one Typer app.

Only typer/rich/yaml load at start-up; each command imports torch, triton or matplotlib
itself, so ``sparsecli --help`` stays fast.
"""
from __future__ import annotations

import os
import sys
import warnings

from ..plumbing.errors import UserError
from . import bench, compare, info, layout, presets  # noqa: F401  (command modules register on `app`)
from .app import app
from .console import err_console


def _degrade_unencodable_output() -> None:
    """Under an encoding that lacks our characters (PYTHONIOENCODING=ascii, a C locale), print
    replacements instead of dying with UnicodeEncodeError halfway through a report."""
    for stream in (sys.stdout, sys.stderr):
        try:
            "·█".encode(stream.encoding or "ascii")
        except (UnicodeEncodeError, LookupError):
            try:
                stream.reconfigure(errors="replace")
            except (AttributeError, ValueError):
                pass


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning is one line too: what it says, not the library line that raised it."""
    from rich.text import Text

    err_console.print(Text.assemble(("warning: ", "yellow"), " ".join(str(message).split())), soft_wrap=True)


def main() -> None:
    """Entry point: known errors become one line on stderr and exit 1 (2 stays Typer's usage error)."""
    _degrade_unencodable_output()
    if not os.environ.get("SPARSECLI_DEBUG"):
        warnings.showwarning = _warning_line
    if sys.argv[1:] in (["--version"], ["-V"]):
        # Answered before Typer: a root option would make every command parse a parameter, and
        # Typer >= 0.29 imports pydantic (0.3-0.8 s) for the first parameter it parses.
        from .. import __version__

        print(f"sparsecli {__version__}")
        return
    try:
        app()
    except UserError as e:
        if os.environ.get("SPARSECLI_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
