"""``sparsecli bench`` (run a preset's sweep, write results, gate against a baseline) and
``sparsecli compare`` (gate one results file against another).

Exit codes: 0 success, 1 error (bad preset, no GPU, unreadable file), 2 usage (Typer),
3 the gate failed. Every output file is written before a non-zero exit.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..output_files import check_no_clobber, check_writable, write_text_atomic
from ..bench.cases import check_no_repeats
from ..errors import UserError
from .app import app
from .console import err_console, out_console

GATE_FAILED = 3
SWEEP = "Sweep (overrides the preset's bench: section)"
OUTPUT = "Output"
GATE = "Regression gate"


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


class ReportFormat(str, Enum):
    table = "table"
    json = "json"


EXAMPLES = {"--seq": "4096,16384", "--dtype": "bf16,fp16", "--pass": "fwd,fwd+bwd",
            "--providers": "sparse,sdpa-flash", "--head-dim": "64,128"}


def _items(text: str | None, flag: str, cast=str) -> tuple | None:
    """A comma-separated option's values; empty or repeated values are errors, never ignored."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise UserError(f"{flag} is empty; give comma-separated values, e.g. {flag} {EXAMPLES[flag]}")
    try:
        values = tuple(cast(p) for p in parts)
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, e.g. {EXAMPLES[flag]} — got {text!r}") from None
    check_no_repeats(values, flag)
    return values


@app.command(no_args_is_help=True)
def bench(
    preset: Annotated[Optional[List[str]], typer.Option("--preset", "-p", help="Bundled preset name or YAML path; repeat for several.", show_default=False)] = None,
    seq: Annotated[Optional[str], typer.Option("--seq", "-s", help="Sequence lengths, e.g. 4096,16384.", rich_help_panel=SWEEP)] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="fp16, bf16 and/or fp32, comma-separated.", rich_help_panel=SWEEP)] = None,
    pass_: Annotated[Optional[str], typer.Option("--pass", help="fwd, bwd and/or fwd+bwd, comma-separated.", rich_help_panel=SWEEP)] = None,
    providers: Annotated[Optional[str], typer.Option("--providers", help="sparse, three-op, sdpa-flash, sdpa-cudnn, sdpa-efficient, sdpa-masked, flex, naive.", rich_help_panel=SWEEP)] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", "-b", help="Batch size \\[default: the preset's tokens // seq].", rich_help_panel=SWEEP)] = None,
    head_dim: Annotated[Optional[str], typer.Option("--head-dim", help="Head dims, e.g. 64,128.", rich_help_panel=SWEEP)] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="What goes to stdout.", rich_help_panel=OUTPUT)] = Format.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the results (.json, or .csv by suffix).", rich_help_panel=OUTPUT)] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="PNG: throughput vs sequence length and speedup vs density.", rich_help_panel=OUTPUT)] = None,
    from_file: Annotated[Optional[Path], typer.Option("--from", help="Render an existing results JSON instead of running (no GPU needed).", rich_help_panel=OUTPUT)] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="Gate against this baseline JSON (exit 3 on a breach).", rich_help_panel=GATE)] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Tolerance floor on the ratio to sdpa-flash.", rich_help_panel=GATE)] = 0.10,
    update_baseline: Annotated[bool, typer.Option("--update-baseline", help="Write this run's ratios into --baseline (cases not run are kept).", rich_help_panel=GATE)] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the planned cases and exit; runs anywhere.")] = False,
    warmup_ms: Annotated[int, typer.Option(min=1, hidden=True, help="do_bench warm-up budget (ms).")] = 100,
    rep_ms: Annotated[int, typer.Option(min=1, hidden=True, help="do_bench repetition budget (ms).")] = 500,
    check: Annotated[bool, typer.Option(hidden=True, help="Check each provider against the reference.")] = True,
):
    """Time the bundled kernels against dense baselines and FlexAttention on a preset's sweep.

    Example: [bold]sparsecli bench --preset fixed --baseline benchmarks/baseline-h100.json -o run.json[/]
    """
    from ..bench import results as res

    if update_baseline and baseline is None:
        raise UserError("--update-baseline needs --baseline PATH (the file to write)")
    if dry_run:
        extra = [flag for flag, value in (("--plot", plot), ("--baseline", baseline)) if value is not None]
        if extra:
            raise UserError(f"--dry-run times nothing, so there is nothing to plot or gate; drop {'/'.join(extra)}")
    check_no_clobber({"-o": output, "--plot": plot, "--baseline": baseline if update_baseline else None},
                      {"--from": from_file, "--baseline": None if update_baseline else baseline})
    for path, flag in ((output, "-o"), (plot, "--plot"), (baseline if update_baseline else None, "--baseline")):
        check_writable(path, flag)
    if plot is not None:
        _check_plot_format(plot)
    base_doc = None
    if baseline is not None and (not update_baseline or baseline.exists()):
        base_doc = res.load(baseline)  # read before the sweep: a bad baseline fails in a second

    if from_file is not None:
        if preset or dry_run:
            raise UserError("--from renders an existing results file; drop --preset/--dry-run")
        sweep = [flag for flag, value in (("--seq", seq), ("--dtype", dtype), ("--pass", pass_),
                                          ("--providers", providers), ("--batch", batch),
                                          ("--head-dim", head_dim)) if value is not None]
        if sweep:
            raise UserError(f"--from renders an existing results file as it is; drop {'/'.join(sweep)} "
                            "(sweep flags apply to a new run with --preset)")
        doc = res.load(from_file)
    else:
        doc = _run(preset, seq, dtype, pass_, providers, batch, head_dim, fmt, dry_run, output,
                   warmup_ms, rep_ms, check)
        if doc is None:  # dry run
            return
    _finish(doc, fmt, output, plot, baseline, base_doc, tolerance, update_baseline)


def _check_plot_format(plot: Path) -> None:
    """Fail before the sweep, not after it, on a file type matplotlib cannot write."""
    suffix = plot.suffix.lower().lstrip(".")
    if not suffix:
        return  # matplotlib writes its default format (savefig.format, PNG) and adds that suffix
    from matplotlib.backend_bases import FigureCanvasBase

    supported = FigureCanvasBase.get_supported_filetypes()
    if suffix not in supported:
        raise UserError(f"--plot {plot}: matplotlib cannot write .{suffix} files; use one of "
                        f"{', '.join('.' + s for s in sorted(supported))}")


def _run(preset, seq, dtype, pass_, providers, batch, head_dim, fmt, dry_run, output, warmup_ms, rep_ms, check):
    from ..bench.cases import Overrides, expand
    from ..bench.host_memory import check_layouts_fit
    from ..preset_loader import load_preset

    if not preset:
        raise UserError("give --preset NAME (bundled) or a YAML path, or --from RESULTS.json")
    presets = [load_preset(p) for p in preset]
    overrides = Overrides(
        seq_lens=_items(seq, "--seq", int), dtypes=_items(dtype, "--dtype"), passes=_items(pass_, "--pass"),
        providers=_items(providers, "--providers"), batch=batch, head_dims=_items(head_dim, "--head-dim", int))
    plan = expand(presets, overrides)
    check_layouts_fit(plan, seq_overridden=seq is not None)
    if dry_run:
        _dry_run(plan, fmt, output)
        return None

    import torch

    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU found: sparsecli bench times GPU kernels (--dry-run lists the cases anywhere)")
    from ..bench import results as res
    from ..bench.runner import RunOptions
    from ..bench.timing import TimingConfig

    opts = RunOptions(device="cuda", timing=TimingConfig(warmup_ms, rep_ms), check=check)
    rows = _with_progress(plan, opts)
    config = {"presets": [p.name for p in presets], "preset_paths": [p.path for p in presets],
              "warmup_ms": warmup_ms, "rep_ms": rep_ms, "checked": check, "cases": len(plan.cases)}
    return res.document(rows, res.capture_env(), config)


def _with_progress(plan, opts):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..bench.runner import Runner

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(plan.cases))

        def on_row(row):
            progress.advance(task)
            progress.update(task, description=row["case_id"])
            if row["status"] != "ok":
                progress.console.print(f"[yellow]{row['case_id']}: {row['status']}[/] {row['reason']}",
                                       highlight=False, soft_wrap=True)

        return Runner(plan, opts, on_row).run()


def _dry_run(plan, fmt, output):
    """Print the planned cases; ``-o`` writes them too (JSON, or CSV by suffix), as ``--format`` prints them."""
    import json

    from ..bench.cases import build_layout, layout_figures, preset_of, shapes
    from ..bench.tables import plan_table

    figures = {}
    for s in shapes(plan):
        p = preset_of(plan, s)
        figures[s] = layout_figures(build_layout(p, s.seq_len), p.sparsity.values["block"], s.causal)
    rows = [{"case_id": c.case_id, "group_id": c.group_id, "preset": c.shape.preset, "provider": c.provider,
             "pass": c.pass_, "dtype": c.shape.dtype, "seq_len": c.shape.seq_len, "batch": c.shape.batch,
             "heads": c.shape.heads, "head_dim": c.shape.head_dim, "block": figures[c.shape].block,
             "causal": c.shape.causal, "density": figures[c.shape].density,
             "nnz_blocks": figures[c.shape].nnz_blocks} for c in plan.cases]
    as_json = json.dumps({"planned": rows}, indent=1) + "\n"
    if output is not None:
        write_text_atomic(output, _csv(rows) if output.suffix.lower() == ".csv" else as_json)
        err_console.print(f"wrote the {len(rows)} planned cases to {output}", highlight=False)
    if fmt is Format.table:
        out_console.print(plan_table(plan, figures))
    elif fmt is Format.json:
        out_console.file.write(as_json)
    else:
        out_console.file.write(_csv(rows))


def _csv(rows: list[dict]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["case_id"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _finish(doc, fmt, output, plot, baseline, base_doc, tolerance, update_baseline):
    from ..bench import results as res
    from ..bench.compare import compare, make_baseline

    report = compare(base_doc, doc, tolerance) if base_doc is not None else None
    if report is not None:
        doc["gate_report"] = report.to_dict()
    # Files first: a failing gate still leaves its evidence behind.
    if output is not None:
        text = res.to_csv(doc["results"]) if output.suffix.lower() == ".csv" else res.to_json(doc)
        write_text_atomic(output, text)
        err_console.print(f"wrote {output}", highlight=False)
    if plot is not None:
        from ..bench.plots import save_results_plot

        written = save_results_plot(doc, plot)
        err_console.print(f"wrote {written}", highlight=False)
    if update_baseline:
        write_text_atomic(baseline, res.to_json(make_baseline(doc, base_doc)))
        err_console.print(f"updated baseline {baseline}", highlight=False)

    _print_doc(doc, fmt, report)
    if report is not None and report.failed and not update_baseline:
        _say_gate_failed(report, baseline)
        raise typer.Exit(GATE_FAILED)


def _print_doc(doc, fmt, report):
    from ..bench import results as res
    from ..bench.tables import gate_table, results_table

    if fmt is Format.json:
        out_console.print_json(res.to_json(doc))
    elif fmt is Format.csv:
        out_console.file.write(res.to_csv(doc["results"]))
    else:
        out_console.print(results_table(doc["results"], doc.get("env")))
        if report is not None:
            out_console.print(gate_table(report))


@app.command(no_args_is_help=True)
def compare(
    base: Annotated[Path, typer.Argument(help="Baseline (or any earlier results) JSON.", show_default=False)],
    new: Annotated[Path, typer.Argument(help="Results JSON to check.", show_default=False)],
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Tolerance floor on the ratio to sdpa-flash.")] = 0.10,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="What goes to stdout.")] = ReportFormat.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the gate report JSON.")] = None,
):
    """Gate NEW against BASE: per case, our time over sdpa-flash's, now vs then. Exit 3 on a breach."""
    import json

    from ..bench import results as res
    from ..bench.compare import compare as run_compare
    from ..bench.tables import gate_table

    check_no_clobber({"-o": output}, {"BASE": base, "NEW": new})
    check_writable(output, "-o")
    report = run_compare(res.load(base), res.load(new), tolerance)
    doc = {"schema_version": res.SCHEMA_VERSION, "baseline": str(base), "results_file": str(new),
           **report.to_dict()}
    if output is not None:
        write_text_atomic(output, json.dumps(doc, indent=1) + "\n")
    if fmt is ReportFormat.json:
        out_console.print_json(json.dumps(doc))
    else:
        out_console.print(gate_table(report))
    if report.failed:
        _say_gate_failed(report, base)
        raise typer.Exit(GATE_FAILED)


def _say_gate_failed(report, baseline) -> None:
    why = report.nothing_compared or ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items()))
    err_console.print(f"[bold red]gate failed[/] against {baseline}: {why}", highlight=False, soft_wrap=True)
