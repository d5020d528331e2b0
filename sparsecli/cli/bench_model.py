"""``sparsecli bench --model CONFIG``: flags to a ``bench.model`` run, its table or JSON, its file."""

from ..plumbing.errors import UserError
from ..plumbing.output_files import check_writable, write_text_atomic
from .console import err_console, out_console

DEFAULT_SEQS, DEFAULT_CONTEXT, DEFAULT_DECODE_BATCH = (32768, 65536), 32768, 8


def bench_model(model, presets, seq, batch, providers, context, decode_batch, fmt, output, other: dict):
    """Plan, check the GPU, run (checks first), write ``-o`` and print; every problem is one line."""
    import json

    from ..bench import model as mb
    from ..bench.model_tables import results_markdown, results_table
    from .bench import Format, _items

    if model is None:
        raise UserError("--context and --decode-batch apply to --model runs; add --model CONFIG")
    given = [flag for flag, value in other.items() if value is not None]
    if given:
        raise UserError(f"{'/'.join(given)} do not apply to --model (it times a model on one --preset layout)")
    if presets and len(presets) > 1:
        raise UserError("--model takes one --preset: the layout every attention layer runs")
    if fmt is Format.csv:
        raise UserError("--model prints a table, --format json or --format markdown")
    check_writable(output, "-o")
    bench = mb.plan(model, presets[0] if presets else None, _items(seq, "--seq", int) or DEFAULT_SEQS,
                    batch or 1, context or DEFAULT_CONTEXT, decode_batch or DEFAULT_DECODE_BATCH,
                    _items(providers, "--providers") or mb.PROVIDERS, mb.MODES)
    import torch

    if not torch.cuda.is_available():
        raise UserError("no CUDA GPU found: sparsecli bench --model times a model on the GPU")

    done = []

    def on_row(row):
        style = "green" if row["status"] == "ok" else "yellow"
        figures = " ".join(f"{k}={row[k]:.4g}" for k in ("max_rel_err", "step_ms", "tokens_per_s", "peak_mem_gib")
                           if isinstance(row.get(k), float))
        err_console.print(f"[{style}]{row['case_id']}: {row['status']}[/] {figures} {row.get('reason') or ''}",
                          highlight=False, soft_wrap=True)
        done.append(row)
        if output is not None:  # rows so far: a run cut short still leaves what it measured
            write_text_atomic(output, json.dumps({"schema": mb.SCHEMA, "partial": True, "results": done},
                                                 indent=1, default=str) + "\n")

    doc = mb.run(bench, on_row)
    text = json.dumps(doc, indent=1, default=str) + "\n"
    if output is not None:
        write_text_atomic(output, text)
        err_console.print(f"wrote {output}", highlight=False)
    if fmt is Format.json:
        out_console.file.write(text)
    elif fmt is Format.markdown:
        out_console.file.write(results_markdown(doc))
    else:
        out_console.print(results_table(doc))
