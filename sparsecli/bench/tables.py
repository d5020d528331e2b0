"""Rich tables for the terminal: the planned sweep, the results, and the gate report."""
from __future__ import annotations

from rich.table import Table

from .cases import PROVIDER_NOTES, Plan
from .compare import Report

STATUS_STYLE = {"ok": "green", "wrong": "bold red", "oom": "yellow", "unavailable": "dim",
                "unsupported": "dim", "failed": "red"}
VERDICT_STYLE = {"pass": "green", "regression": "bold red", "stale": "yellow", "missing": "red",
                 "new": "cyan", "not_run": "dim"}


def num(value, fmt: str, dash: str = "—") -> str:
    if value is None or value == "":
        return dash
    if isinstance(value, str):  # "inf"/"nan" kept as text in JSON
        return value
    return format(value, fmt)


def group_title(row: dict) -> str:
    causal = " causal" if row.get("causal") else ""
    return (f"{row['preset']} {row['pass']} S={row['seq_len']} B={row['batch']} H={row['heads']} "
            f"D={row['head_dim']} {row['dtype']}{causal}, density {num(row.get('density'), '.1%')}")


def plan_table(plan: Plan, figures: dict) -> Table:
    """``figures``: {shape: LayoutFigures} for the density and non-zero block columns."""
    t = Table(title=f"{len(plan.cases)} planned cases (dry run: nothing timed)", title_justify="left")
    t.add_column("case_id", overflow="fold")
    for name in ("density", "nnz blocks", "block"):
        t.add_column(name, justify="right")
    for c in plan.cases:
        f = figures[c.shape]
        t.add_row(c.case_id, f"{f.density:.1%}", str(f.nnz_blocks), str(f.block))
    return t


def provider_legend(rows: list[dict]) -> str:
    """What the peers in ``rows`` are (``flex`` is Flex's Triton backend), or ""."""
    present = dict.fromkeys(r["provider"] for r in rows)
    return "; ".join(f"{p} = {PROVIDER_NOTES[p]}" for p in present if p in PROVIDER_NOTES)


def results_table(rows: list[dict], env: dict | None = None) -> Table:
    gpu = (env or {}).get("gpu") or "?"
    legend = provider_legend(rows)
    t = Table(title=f"sparsecli bench · {gpu} · median of do_bench (p20–p80)", title_justify="left",
              caption="TFLOP/s: nnz = on non-zero blocks, dense = dense-equivalent; speedup = "
                      "other provider's median / this one's; mem = peak allocated during one call above "
                      "what was allocated before it (persistent masks and index tables excluded)"
                      + (f"; {legend}" if legend else ""),
              caption_justify="left")
    t.add_column("provider", no_wrap=True)
    t.add_column("ms", justify="right")
    t.add_column("p20–p80", justify="right")
    t.add_column("TFLOP/s nnz", justify="right")
    t.add_column("TFLOP/s dense", justify="right")
    t.add_column("× flash", justify="right")
    t.add_column("× flex", justify="right")
    t.add_column("mem MiB", justify="right")
    t.add_column("rel err", justify="right")
    t.add_column("index ms", justify="right")
    t.add_column("status")
    group = None
    for r in rows:
        if r["group_id"] != group:
            if group is not None:
                t.add_section()
            group = r["group_id"]
            t.add_row(f"[bold]{group_title(r)}[/]", *[""] * 10)
        style = STATUS_STYLE.get(r["status"], "")
        err = num(r.get("max_rel_err"), ".1e", dash="unchecked")
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"
        spread = (f"{r['p20_ms']:.3f}–{r['p80_ms']:.3f}" if r.get("p20_ms") is not None else "—")
        t.add_row(
            f"  {r['provider']}", num(r.get("median_ms"), ".3f"), spread,
            num(r.get("tflops_nnz"), ".1f"), num(r.get("tflops_dense"), ".1f"),
            num(r.get("speedup_vs_flash"), ".2f"), num(r.get("speedup_vs_flex"), ".2f"),
            num(r.get("peak_mem_mib"), ",.0f"), err, num(r.get("index_build_ms"), ".2f"),
            f"[{style}]{status}[/]" if style else status,
        )
    return t


def gate_table(report: Report) -> Table:
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items())) or "no cases"
    verdict = "[bold red]FAILED[/]" if report.failed else "[green]passed[/]"
    problem = f" · [bold red]{report.nothing_compared}[/]" if report.nothing_compared else ""
    t = Table(title=f"gate {verdict}: ratio to sdpa-flash vs baseline (floor ±{report.floor:.0%}) · {counts}{problem}",
              title_justify="left")
    for name in ("case_id", "verdict", "base ratio", "new ratio", "change", "tolerance",
                 "base ms", "new ms", "note"):
        t.add_column(name, justify="left" if name in ("case_id", "verdict", "note") else "right",
                     overflow="fold" if name == "case_id" else "ellipsis")
    for c in report.cases:
        if c.verdict == "not_run":  # other presets' entries: counted in the title only
            continue
        style = VERDICT_STYLE.get(c.verdict, "")
        t.add_row(c.case_id, f"[{style}]{c.verdict}[/]", num(c.base_ratio, ".3f"), num(c.new_ratio, ".3f"),
                  num(c.change, "+.1%"), num(c.tolerance, ".0%"), num(c.base_ms, ".3f"),
                  num(c.new_ms, ".3f"), c.reason)
    return t
