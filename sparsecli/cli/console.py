"""The two consoles: data on stdout, progress/warnings/hints on stderr (so ``--format json | jq`` works)."""
from rich.console import Console

out_console = Console()
err_console = Console(stderr=True)
