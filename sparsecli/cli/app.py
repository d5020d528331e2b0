"""The Typer application every command module registers on."""
import typer

app = typer.Typer(
    name="sparsecli",
    help="Design block-sparse attention layouts and benchmark Triton block-sparse attention kernels.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)
