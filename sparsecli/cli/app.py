"""The Typer application every command module registers on.

Start-up: Typer >= 0.29 imports pydantic (0.3-0.8 s) the first time it coerces a parameter value,
and it coerces even an unused --help flag, whose value is None. ``presets`` must answer in under
half a second, so its groups and commands use the classes below (--help defaults to False, which
needs no coercion), take no declared parameters, and the root has no options (not even Typer's
--install-completion; ``--version`` is answered in ``main``).
"""
import contextlib

import typer
from typer.core import TyperCommand, TyperGroup

# Click's exception base: Typer >= 0.29 ships its own copy of Click (typer._click), older Typer
# uses click itself; BadParameter derives from whichever is in use.
_CLICK_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _help_defaults_false(option):
    if option is not None and option.default is None:
        option.default = False
    return option


@contextlib.contextmanager
def _usage_errors_on_one_line():
    """A usage error (bad value, unknown option or command, missing argument) is one line on stderr
    and exit code 2, like our own errors, instead of Typer's usage line, hint and boxed message.
    Raising ``Exit`` keeps Typer's own flow (and CliRunner's exit codes) as they are."""
    try:
        yield
    except _CLICK_ERROR as e:
        if type(e).__name__ == "NoArgsIsHelpError":
            raise  # the help is already printed; Typer exits with its code
        from rich.text import Text

        from .console import err_console

        # Typer's pydantic conversion prefixes its reasons with "Value error, "
        message = " ".join(e.format_message().replace("Value error, ", "").split())
        err_console.print(Text.assemble(("error:", "bold red"), " ", message), soft_wrap=True)
        raise typer.Exit(e.exit_code) from None


class LightGroup(TyperGroup):
    def get_help_option(self, ctx):
        return _help_defaults_false(super().get_help_option(ctx))

    def make_context(self, *args, **kwargs):
        with _usage_errors_on_one_line():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with _usage_errors_on_one_line():
            return super().invoke(ctx)


class Command(TyperCommand):
    """Usage names required arguments plainly (``compare [OPTIONS] BASE NEW``), where Typer >= 0.29
    wraps them in braces."""

    def collect_usage_pieces(self, ctx):
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]


class LightCommand(Command):
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
