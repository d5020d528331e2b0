"""``sparsecli presets``: list the bundled presets, or show one.

Neither imports torch: listing validates each preset by constructing its config, which is
torch-free (``sparsecli.layouts`` imports torch only to build tensors).
"""

import sys
import typer
from rich.table import Table

from ..plumbing.errors import UserError
from ..layouts.presets import bundled_names, load_preset, read_preset_bytes
from .app import LightCommand, LightGroup, app
from .console import out_console

presets_app = typer.Typer(cls=LightGroup, help="List the bundled presets, or show one.", invoke_without_command=True)
app.add_typer(presets_app, name="presets")


@presets_app.callback()
def presets(ctx: typer.Context):
    """List the bundled presets (use them as --preset NAME)."""
    if ctx.invoked_subcommand is None:
        _print_list()


@presets_app.command("list", cls=LightCommand)
def list_presets():
    """List the bundled presets (the same as bare [bold]sparsecli presets[/])."""
    _print_list()


def _print_list() -> None:
    # Names and numbers never wrap (a cut name cannot be pasted as --preset NAME); the description
    # takes what COLUMNS leaves, and no outer edge leaves it room enough at 80 columns.
    t = Table(title="bundled presets", title_justify="left", show_edge=False)
    for name in ("name", "mode", "block", "heads"):
        t.add_column(name, no_wrap=True)
    t.add_column("description")
    for name in bundled_names():
        p = load_preset(name)
        t.add_row(name, p.sparsity.mode, str(p.sparsity.block), str(p.sparsity.num_heads), p.description)
    out_console.print(t)


@presets_app.command("show", cls=LightCommand, context_settings={"allow_extra_args": True}, options_metavar="NAME")
def show(ctx: typer.Context):
    """Print preset NAME's YAML exactly as stored (validated first): [bold]sparsecli presets show bigbird > my.yaml[/]

    NAME is a bundled preset or a YAML path.
    """
    # NAME is read from ctx.args rather than declared: Typer (>= 0.29) coerces a declared parameter
    # through pydantic, whose import alone costs more than the 0.5 s this command may take.
    if len(ctx.args) != 1:
        raise UserError("presets show takes one NAME (a bundled preset or a YAML path), e.g. presets show bigbird")
    name = ctx.args[0]
    if not name.strip():
        raise UserError("presets show: NAME is empty; give a bundled preset or a YAML path, e.g. presets show bigbird")
    load_preset(name)
    _, _, data = read_preset_bytes(name)
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
