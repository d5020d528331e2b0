"""``sparsecli`` command line: one module per command group, registered on one Typer app.

Only typer/rich/yaml load at start-up; each command imports torch, triton or matplotlib
itself, so ``sparsecli --help`` stays fast.
"""
from __future__ import annotations

import os
import sys

from ..errors import UserError
from . import bench, compare, info, layout, presets  # noqa: F401  (command modules register on `app`)
from .app import app
from .console import err_console


def main() -> None:
    """Entry point: known errors become one line on stderr and exit 1 (2 stays Typer's usage error)."""
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
