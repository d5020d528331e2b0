"""Benchmark figures from a results document: throughput vs sequence length, speedup vs density.

One column per pass. Top: TFLOP/s on non-zero blocks (the useful work, the same for every
provider of a case, so the curves compare like with like) vs sequence length on a log2 axis, one
line per provider (and per dtype/head dim/preset when the sweep has several). Bottom: speedup
over sdpa-flash vs layout density, one marker series per provider. Figure API only, no pyplot.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .cases import FLASH, PROVIDER_NOTES


def _series_key(row: dict, multi: dict) -> str:
    note = PROVIDER_NOTES.get(row["provider"])
    parts = [f"{row['provider']} ({note})" if note else row["provider"]]
    for key, fmt in (("preset", "{}"), ("dtype", "{}"), ("head_dim", "D{}")):
        if multi[key]:
            parts.append(fmt.format(row[key]))
    return " ".join(parts)


def results_figure(doc: dict):
    from matplotlib.figure import Figure

    rows = [r for r in doc["results"] if r["status"] == "ok" and r.get("median_ms")]
    passes = list(dict.fromkeys(r["pass"] for r in doc["results"])) or ["fwd"]
    multi = {k: len({r[k] for r in rows}) > 1 for k in ("preset", "dtype", "head_dim")}
    fig = Figure(figsize=(5.5 * len(passes), 8.5), layout="constrained")
    axes = fig.subplots(2, len(passes), squeeze=False)
    gpu = (doc.get("env") or {}).get("gpu") or "unknown GPU"
    fig.suptitle(f"sparsecli bench on {gpu}")
    # One colour per series across every panel, so a provider reads the same everywhere.
    labels = sorted({_series_key(r, multi) for r in rows})
    colour = {label: f"C{i % 10}" for i, label in enumerate(labels)}
    for col, pass_ in enumerate(passes):
        top, bottom = axes[0][col], axes[1][col]
        lines = defaultdict(list)
        points = defaultdict(list)
        for r in rows:
            if r["pass"] != pass_:
                continue
            lines[_series_key(r, multi)].append((r["seq_len"], r["tflops_nnz"]))
            if r.get("speedup_vs_flash") and r["provider"] != FLASH and r.get("density") is not None:
                points[_series_key(r, multi)].append((r["density"], r["speedup_vs_flash"]))
        for label, pts in sorted(lines.items()):
            pts.sort()
            top.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label, color=colour[label])
        top.set_xscale("log", base=2)
        top.set_xlabel("sequence length (tokens)")
        top.set_ylabel("TFLOP/s on non-zero blocks")
        top.set_title(f"{pass_}: throughput")
        top.grid(True, alpha=0.3)
        for label, pts in sorted(points.items()):
            bottom.scatter([p[0] for p in pts], [p[1] for p in pts], label=label, color=colour[label])
        bottom.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        bottom.set_xlabel("layout density (non-zero block fraction)")
        bottom.set_ylabel(f"speedup over {FLASH} (x)")
        bottom.set_title(f"{pass_}: speedup vs density")
        bottom.grid(True, alpha=0.3)
        for ax in (top, bottom):
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small")
            else:
                ax.text(0.5, 0.5, "no successful rows", ha="center", va="center", transform=ax.transAxes)
    return fig


def save_results_plot(doc: dict, path: str | Path) -> Path:
    """Write the figure atomically; returns the path written (a name without a suffix gets the
    default format's, as ``savefig`` would add it)."""
    from matplotlib import rcParams

    from ..plumbing.output_files import write_atomic

    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if not fmt:
        fmt = rcParams["savefig.format"]
        path = path.with_name(f"{path.name}.{fmt}")
    fig = results_figure(doc)
    return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110, format=fmt))
