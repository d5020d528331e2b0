"""What a path parameter accepts: ``typer.Option(parser=path)``.

An empty argument (``-o ""``, ``compare "" NEW``) would become ``Path(".")``, the current
directory, and fail later as ".: is a directory" or, worse, as a directory named BASE; it is a
usage error that says the argument is empty.
"""
from pathlib import Path

import typer


def path(text: str) -> Path:
    if not text.strip():
        raise typer.BadParameter("is empty; give a path")
    return Path(text)
