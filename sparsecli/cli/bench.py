"""``sparsecli bench``: run a preset's sweep (on one GPU or spread over several), write results,
gate them against the runner's GPU's baseline; or render an existing results file.

Exit codes: 0 success, 1 error (bad preset, no GPU, unreadable file, another GPU's baseline),
2 usage (Typer), 3 the gate failed. Every output file is written before a non-zero exit.
"""

from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ..bench.cases import check_no_repeats
from ..plumbing.errors import UserError
from ..plumbing.output_files import check_no_clobber, check_writable, write_text_atomic
from .app import app
from .console import err_console, out_console
from .gate import allow_gpu_mismatch_option, fail_if_gate_failed
from .path_params import path

SWEEP = "Sweep (overrides the preset's bench: section)"
OUTPUT = "Output"
GATE = "Regression gate"
EXAMPLES = {"--seq": "4096,16384", "--dtype": "bf16,fp16", "--pass": "fwd,fwd+bwd",
            "--providers": "sparse,sdpa-flash", "--head-dim": "64,128"}


LayoutAttention = Enum("LayoutAttention", {a: a for a in ("unidirectional", "bidirectional")}, type=str)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


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


@dataclass
class Sweep:
    """A planned run: the presets (or layout file) as the user named them, which workers reload,
    and the plan."""

    refs: list
    layout: dict | None  # {"path", "block"} of a --layout file
    overrides: object  # cases.Overrides
    plan: object  # cases.Plan
    warmup_ms: int
    rep_ms: int
    check: bool


@app.command(no_args_is_help=True)
def bench(
    preset: Annotated[Optional[List[str]], typer.Option("--preset", "-p", help="Bundled preset name or YAML path; repeat for several.", show_default=False)] = None,
    layout_file: Annotated[Optional[Path], typer.Option("--layout", parser=path, help="Benchmark a layout file (.pt, .npy, .npz; (H, nb, nb) or (nb, nb) of 0/1) instead of a preset; give its --block.", show_default=False)] = None,
    block: Annotated[Optional[int], typer.Option("--block", help="The --layout file's block size (16, 32, 64 or 128).", show_default=False)] = None,
    attention: Annotated[Optional[LayoutAttention], typer.Option("--attention", metavar="MODE", help="The --layout file's attention: unidirectional (causal cases) or bidirectional.", show_default="what the file records, else bidirectional")] = None,
    seq: Annotated[Optional[str], typer.Option("--seq", "-s", help="Sequence lengths, e.g. 4096,16384.", rich_help_panel=SWEEP)] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="fp16, bf16 and/or fp32, comma-separated.", rich_help_panel=SWEEP)] = None,
    pass_: Annotated[Optional[str], typer.Option("--pass", help="fwd, bwd and/or fwd+bwd, comma-separated.", rich_help_panel=SWEEP)] = None,
    providers: Annotated[Optional[str], typer.Option("--providers", help="sparse, three-op, sdpa-flash, sdpa-cudnn, sdpa-efficient, sdpa-masked, flex, flex-flash, fa4, naive.", rich_help_panel=SWEEP)] = None,
    batch: Annotated[Optional[int], typer.Option("--batch", "-b", help="Batch size \\[default: the preset's tokens // seq].", rich_help_panel=SWEEP)] = None,
    head_dim: Annotated[Optional[str], typer.Option("--head-dim", help="Head dims, e.g. 64,128.", rich_help_panel=SWEEP)] = None,
    devices: Annotated[Optional[str], typer.Option("--devices", help="GPUs to spread the sweep over, e.g. 0,1 or all (one process per GPU; a case's providers share a GPU).", rich_help_panel=SWEEP)] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="What goes to stdout (markdown: GitHub tables, gate first).", rich_help_panel=OUTPUT)] = Format.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", parser=path, help="Write the results (.json, or .csv by suffix).", rich_help_panel=OUTPUT)] = None,
    plot: Annotated[Optional[Path], typer.Option("--plot", parser=path, help="PNG: throughput vs sequence length and speedup vs density.", rich_help_panel=OUTPUT)] = None,
    from_file: Annotated[Optional[Path], typer.Option("--from", parser=path, help="Render an existing results JSON instead of running (no GPU needed).", rich_help_panel=OUTPUT)] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", parser=path, help="Gate against this baseline JSON, or the runner's GPU's file in a directory of <gpu-slug>.json (exit 3 on a breach).", rich_help_panel=GATE)] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Tolerance floor on the ratio to sdpa-flash.", rich_help_panel=GATE)] = 0.10,
    update_baseline: Annotated[bool, typer.Option("--update-baseline", help="Write this run's ratios into --baseline (the runner's GPU's file of a directory; cases not run are kept).", rich_help_panel=GATE)] = False,
    allow_gpu_mismatch: Annotated[bool, allow_gpu_mismatch_option(GATE)] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the planned cases and exit; runs anywhere.")] = False,
    warmup_ms: Annotated[int, typer.Option(min=1, hidden=True, help="do_bench warm-up budget (ms).")] = 100,
    rep_ms: Annotated[int, typer.Option(min=1, hidden=True, help="do_bench repetition budget (ms).")] = 500,
    check: Annotated[bool, typer.Option(hidden=True, help="Check each provider against the reference.")] = True,
    model: Annotated[Optional[str], typer.Option("--model", help="Time a transformers decoder instead (random bf16 weights): a bundled name (llama-8l-2048) or a config.json; --preset names its layout.", rich_help_panel="Model", show_default=False)] = None,
    context: Annotated[Optional[int], typer.Option("--context", min=1, help="--model: decode at this context \\[default: 32768].", rich_help_panel="Model", show_default=False)] = None,
    decode_batch: Annotated[Optional[int], typer.Option("--decode-batch", min=1, help="--model: sequences decoded together \\[default: 8].", rich_help_panel="Model", show_default=False)] = None,
):
    """Time the bundled kernels against dense baselines, FlexAttention and FlashAttention-4 on a preset's sweep.

    Example: [bold]sparsecli bench --preset fixed --baseline benchmarks/baselines -o run.json[/]
    """
    from ..bench import baselines
    from ..bench import results as res

    if model is not None or context is not None or decode_batch is not None:
        from .bench_model import bench_model

        return bench_model(model, preset, seq, batch, providers, context, decode_batch, fmt, output,
                           other={"--layout": layout_file, "--block": block, "--dtype": dtype, "--pass": pass_,
                                  "--head-dim": head_dim, "--devices": devices, "--plot": plot, "--from": from_file,
                                  "--baseline": baseline, "--dry-run": dry_run or None})
    if update_baseline and baseline is None:
        raise UserError("--update-baseline needs --baseline PATH (the file, or directory, to write)")
    if dry_run:
        extra = [flag for flag, value in (("--plot", plot), ("--baseline", baseline), ("--devices", devices))
                 if value is not None]
        if extra:
            raise UserError(f"--dry-run times nothing, so there is nothing to plot, gate or spread; drop {'/'.join(extra)}")
    check_no_clobber({"-o": output, "--plot": plot}, {"--from": from_file})
    for path, flag in ((output, "-o"), (plot, "--plot")):
        check_writable(path, flag)
    if plot is not None:
        _check_plot_format(plot)

    sweep = gpus = None
    if from_file is not None:
        if preset or layout_file or dry_run or devices:
            raise UserError("--from renders an existing results file; drop --preset/--layout/--dry-run/--devices")
        _reject_sweep_flags(seq=seq, dtype=dtype, pass_=pass_, providers=providers, batch=batch, head_dim=head_dim,
                            block=block, attention=attention)
        doc = res.load(from_file)
        if not doc["results"]:  # an empty table and exit 0 would read as "ran, nothing to report"
            raise UserError(f"{from_file}: holds no results (its 'results' list is empty); nothing to render")
    else:
        sweep = _plan(preset, layout_file, block, attention and attention.value, seq, dtype, pass_, providers, batch,
                      head_dim, warmup_ms, rep_ms, check)
        if dry_run:
            _dry_run(sweep.plan, fmt, output)
            return
        gpus, gpu = _gpus(devices)

    base_path = base_doc = None
    if baseline is not None:  # chosen and read before the sweep: a wrong baseline fails in a second
        gpu = baselines.run_gpu(doc, str(from_file)) if from_file is not None else gpu
        base_path, base_doc = baselines.select(baseline, gpu, allow_mismatch=allow_gpu_mismatch,
                                               updating=update_baseline)
        written, read = (base_path, None) if update_baseline else (None, base_path)
        check_no_clobber({"-o": output, "--plot": plot, "--baseline": written}, {"--baseline": read})
        check_writable(written, "--baseline")
    if sweep is not None:
        doc = _run(sweep, gpus)
    _finish(doc, fmt, output, plot, base_path, base_doc, tolerance, update_baseline)


def _reject_sweep_flags(**values) -> None:
    given = ["--" + name.rstrip("_").replace("_", "-") for name, value in values.items() if value is not None]
    if given:
        raise UserError(f"--from renders an existing results file as it is; drop {'/'.join(given)} "
                        "(sweep flags apply to a new run with --preset)")


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


def _plan(preset, layout_file, block, attention, seq, dtype, pass_, providers, batch, head_dim, warmup_ms, rep_ms,
          check) -> Sweep:
    from ..bench.cases import Overrides, check_layouts_fit, expand
    from ..bench.file_preset import check_seq, layout_file_preset
    from ..layouts.presets import load_preset

    if preset and layout_file is not None:
        raise UserError("give --preset or --layout, not both (one run, one source of layouts)")
    if block is not None and layout_file is None:
        raise UserError("--block is a --layout file's block size; a preset sets its own block")
    if attention is not None and layout_file is None:
        raise UserError("--attention is a --layout file's attention mode; a preset sets its own (bench: causal:)")
    if not preset and layout_file is None:
        raise UserError("give --preset NAME (bundled) or a YAML path, --layout FILE --block B, or --from RESULTS.json")
    overrides = Overrides(
        seq_lens=_items(seq, "--seq", int), dtypes=_items(dtype, "--dtype"), passes=_items(pass_, "--pass"),
        providers=_items(providers, "--providers"), batch=batch, head_dims=_items(head_dim, "--head-dim", int))
    if layout_file is not None:
        presets = [layout_file_preset(layout_file, block, attention)]
        check_seq(presets[0], overrides.seq_lens)
    else:
        presets = [load_preset(p) for p in preset]
    plan = expand(presets, overrides)
    check_layouts_fit(plan, seq_overridden=seq is not None)
    layout = None if layout_file is None else {"path": str(layout_file), "block": block, "attention": attention}
    return Sweep(list(preset or []), layout, overrides, plan, warmup_ms, rep_ms, check)


def _gpus(devices: str | None) -> tuple[list[int] | None, str]:
    """(the GPUs of a --devices sweep or None for this process's GPU, their one model's name)."""
    import torch

    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU found: sparsecli bench times GPU kernels (--dry-run lists the cases anywhere)")
    if devices is None:
        return None, torch.cuda.get_device_name(torch.cuda.current_device())
    from ..bench.devices import parse_devices

    chosen = parse_devices(devices, torch.cuda.device_count())
    names = {i: torch.cuda.get_device_name(i) for i in chosen}
    if len(set(names.values())) > 1:
        listed = ", ".join(f"{i}: {n}" for i, n in names.items())
        raise UserError(f"--devices mixes GPU models ({listed}); one results file and baseline hold one model, "
                        "so pick GPUs of one model")
    return chosen, names[chosen[0]]


def _run(sweep: Sweep, gpus: list[int] | None) -> dict:
    from ..bench import results as res
    from ..bench.runner import Runner, RunOptions, add_speedups
    from ..bench.timing import TimingConfig

    plan = sweep.plan
    if gpus is None:
        opts = RunOptions(device="cuda", timing=TimingConfig(sweep.warmup_ms, sweep.rep_ms), check=sweep.check)
        rows = _with_progress(len(plan.cases), lambda on_row: Runner(plan, opts, on_row).run())
    else:
        from ..bench.cases import layout_fingerprint, preset_of
        from ..bench.devices import run_on_devices
        from ..bench.runner import base_row

        def failed_row(case, reason):
            row = base_row(case, None, layout_fingerprint(preset_of(plan, case.shape)))
            return {**row, "status": "failed", "reason": reason}

        spec = {"presets": sweep.refs, "layout": sweep.layout, "overrides": asdict(sweep.overrides),
                "warmup_ms": sweep.warmup_ms,
                "rep_ms": sweep.rep_ms, "check": sweep.check}
        rows = _with_progress(len(plan.cases), lambda on_row: run_on_devices(plan, spec, gpus, on_row, failed_row))
        add_speedups(rows)  # workers stream rows before their speedups; groups never span GPUs
    config = {"presets": [p.name for p in plan.presets], "preset_paths": [p.path for p in plan.presets],
              "warmup_ms": sweep.warmup_ms, "rep_ms": sweep.rep_ms, "checked": sweep.check,
              "cases": len(plan.cases), "devices": gpus}
    return res.document(rows, res.capture_env(gpus), config)


def _with_progress(total: int, run):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=total)

        def on_row(row):
            progress.advance(task)
            progress.update(task, description=row["case_id"])
            if row["status"] != "ok":
                progress.console.print(f"[yellow]{row['case_id']}: {row['status']}[/] {row['reason']}",
                                       highlight=False, soft_wrap=True)

        return run(on_row)


def _dry_run(plan, fmt, output):
    """Print the planned cases; ``-o`` writes them too (JSON, or CSV by suffix), as ``--format`` prints them."""
    import json

    from ..bench.cases import build_layout, layout_figures, preset_of, shapes
    from ..bench.results import to_csv

    figures = {}
    for s in shapes(plan):
        p = preset_of(plan, s)
        figures[s] = layout_figures(build_layout(p, s.seq_len), p.sparsity.block, s.causal)
    rows = [{"case_id": c.case_id, "group_id": c.group_id, "preset": c.shape.preset, "provider": c.provider,
             "pass": c.pass_, "dtype": c.shape.dtype, "seq_len": c.shape.seq_len, "batch": c.shape.batch,
             "heads": c.shape.heads, "head_dim": c.shape.head_dim, "block": figures[c.shape].block,
             "causal": c.shape.causal, "density": figures[c.shape].density,
             "nnz_blocks": figures[c.shape].nnz_blocks} for c in plan.cases]
    as_json = json.dumps({"planned": rows}, indent=1) + "\n"
    if output is not None:
        write_text_atomic(output, to_csv(rows, list(rows[0]) if rows else ['case_id']) if output.suffix.lower() == ".csv" else as_json)
        err_console.print(f"wrote the {len(rows)} planned cases to {output}", highlight=False)
    if fmt is Format.json:
        out_console.file.write(as_json)
    elif fmt is Format.csv:
        out_console.file.write(to_csv(rows, list(rows[0]) if rows else ['case_id']))
    elif fmt is Format.markdown:
        from ..bench.markdown import plan_markdown

        out_console.file.write(plan_markdown(rows))
    else:
        from ..bench.tables import plan_table

        out_console.print(plan_table(plan, figures))


def _finish(doc, fmt, output, plot, base_path, base_doc, tolerance, update_baseline):
    from ..bench import results as res
    from ..bench.compare import compare, make_baseline

    report = compare(base_doc, doc, tolerance) if base_doc is not None else None
    if report is not None:
        doc["gate_report"] = {"baseline": str(base_path), **report.to_dict()}
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
        write_text_atomic(base_path, res.to_json(make_baseline(doc, base_doc)))
        err_console.print(f"updated baseline {base_path}", highlight=False)

    _print_doc(doc, fmt, report, base_path)
    if not update_baseline:
        fail_if_gate_failed(report, base_path)


def _print_doc(doc, fmt, report, base_path):
    from ..bench import results as res

    if fmt is Format.json:
        out_console.print_json(res.to_json(doc))
    elif fmt is Format.csv:
        out_console.file.write(res.to_csv(doc["results"]))
    elif fmt is Format.markdown:
        from ..bench.markdown import results_markdown

        out_console.file.write(results_markdown(doc, report, str(base_path)))
    else:
        from ..bench.tables import gate_table, results_table

        out_console.print(results_table(doc["results"], doc.get("env")))
        if report is not None:
            out_console.print(gate_table(report))
