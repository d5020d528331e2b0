"""``sparsecli presets``: list the bundled presets, or show one."""
from __future__ import annotations

from typing import Annotated

import typer
from rich.syntax import Syntax
from rich.table import Table

from ..preset_loader import bundled_names, load_preset, read_preset_text
from .app import app
from .console import out_console

presets_app = typer.Typer(help="List the bundled presets, or show one.", invoke_without_command=True)
app.add_typer(presets_app, name="presets")


@presets_app.callback()
def list_presets(ctx: typer.Context):
    """List the bundled presets (use them as --preset NAME)."""
    if ctx.invoked_subcommand is not None:
        return
    t = Table("name", "mode", "block", "heads", "description", title="bundled presets", title_justify="left")
    for name in bundled_names():
        p = load_preset(name)
        t.add_row(name, p.sparsity.mode, str(p.sparsity.values["block"]), str(p.sparsity.num_heads), p.description)
    out_console.print(t)


@presets_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Bundled preset name or YAML path.")]):
    """Print a preset's YAML (validated first)."""
    load_preset(name)
    _, _, text = read_preset_text(name)
    out_console.print(Syntax(text, "yaml", theme="ansi_dark", background_color="default"))
