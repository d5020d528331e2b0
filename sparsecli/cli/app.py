"""The Typer application every command module registers on.

Start-up: Typer >= 0.29 imports pydantic (0.3-0.8 s) the first time it coerces a parameter value,
and it coerces even an unused --help flag, whose value is None. ``presets`` must answer in under
half a second, so its groups and commands use the classes below (--help defaults to False, which
needs no coercion), take no declared parameters, and the root has no options (not even Typer's
--install-completion; ``--version`` is answered in ``main``).
"""
import typer
from typer.core import TyperCommand, TyperGroup


def _help_defaults_false(option):
    if option is not None and option.default is None:
        option.default = False
    return option


class LightGroup(TyperGroup):
    def get_help_option(self, ctx):
        return _help_defaults_false(super().get_help_option(ctx))


class LightCommand(TyperCommand):
    def get_help_option(self, ctx):
        return _help_defaults_false(super().get_help_option(ctx))


app = typer.Typer(
    name="sparsecli",
    cls=LightGroup,
    help="Design block-sparse attention layouts and benchmark Triton block-sparse attention kernels. "
         "[dim]sparsecli --version prints the version.[/]",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)
