"""``sparsecli compare``: gate one results file against a baseline (file, or per-GPU directory).

Exit codes: 0 passed, 1 error (unreadable file, baseline of another GPU model), 3 the gate failed.
"""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..plumbing.output_files import check_no_clobber, check_writable, write_text_atomic
from .app import Command, app
from .console import out_console
from .gate import ReportFormat, allow_gpu_mismatch_option, fail_if_gate_failed
from .path_params import path


@app.command(cls=Command, no_args_is_help=True)
def compare(
    base: Annotated[Path, typer.Argument(parser=path, metavar="BASE", help="Baseline JSON, or a directory of per-GPU baselines (<gpu-slug>.json).", show_default=False)],
    new: Annotated[Path, typer.Argument(parser=path, metavar="NEW", help="Results JSON to check.", show_default=False)],
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, help="Tolerance floor on the ratio to sdpa-flash.")] = 0.10,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="What goes to stdout.")] = ReportFormat.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", parser=path, help="Write the gate report JSON.")] = None,
    allow_gpu_mismatch: Annotated[bool, allow_gpu_mismatch_option()] = False,
):
    """Gate NEW against BASE: per case, our time over sdpa-flash's, now vs then. Exit 3 on a breach."""
    import json

    from ..bench import baselines
    from ..bench import results as res
    from ..bench.compare import compare as run_compare

    check_no_clobber({"-o": output}, {"NEW": new})
    check_writable(output, "-o")
    new_doc = res.load(new)
    base_path, base_doc = baselines.select(base, baselines.run_gpu(new_doc, str(new)),
                                           allow_mismatch=allow_gpu_mismatch, updating=False)
    check_no_clobber({"-o": output}, {"BASE": base_path})
    report = run_compare(base_doc, new_doc, tolerance)
    doc = {"schema_version": res.SCHEMA_VERSION, "baseline": str(base_path), "results_file": str(new),
           **report.to_dict()}
    if output is not None:
        write_text_atomic(output, json.dumps(doc, indent=1) + "\n")
    if fmt is ReportFormat.json:
        out_console.print_json(json.dumps(doc))
    elif fmt is ReportFormat.markdown:
        from ..bench.markdown import gate_markdown

        out_console.file.write(gate_markdown(report, str(base_path)))
    else:
        from ..bench.tables import gate_table

        out_console.print(gate_table(report))
    fail_if_gate_failed(report, base_path)
