"""What ``bench`` and ``compare`` share about the regression gate: the output formats, the
``--allow-gpu-mismatch`` option, and how a failed gate is reported (one stderr line, exit 3)."""
from __future__ import annotations

from enum import Enum
import typer

from .console import err_console

GATE_FAILED = 3

def allow_gpu_mismatch_option(panel: str | None = None):
    return typer.Option("--allow-gpu-mismatch", rich_help_panel=panel,
                        help="Compare against a baseline measured on another GPU model anyway (ratios differ between models).")


class ReportFormat(str, Enum):
    table = "table"
    json = "json"
    markdown = "markdown"


def fail_if_gate_failed(report, baseline) -> None:
    if report is None or not report.failed:
        return
    why = report.nothing_compared or ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items()))
    err_console.print(f"[bold red]gate failed[/] against {baseline}: {why}", highlight=False, soft_wrap=True)
    raise typer.Exit(GATE_FAILED)
