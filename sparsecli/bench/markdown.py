"""GitHub-flavoured markdown of a results document and its gate report (for ``$GITHUB_STEP_SUMMARY``).

The gate's verdict comes first, failing cases at the top of its table; then one table per case
group (the providers of one shape and pass, timed on the same inputs).
"""
from __future__ import annotations

from .compare import FAILING, Report
from .tables import group_title, num, provider_legend

RESULT_COLUMNS = ("provider", "ms", "p20–p80", "TFLOP/s nnz", "TFLOP/s dense", "× flash", "× flex",
                  "mem MiB", "rel err", "status")
GATE_COLUMNS = ("case_id", "verdict", "base ratio", "new ratio", "change", "tolerance", "base ms", "new ms", "note")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header, rows) -> list[str]:
    right = {i for i, h in enumerate(header) if h not in ("provider", "case_id", "verdict", "note", "status")}
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def gate_markdown(report: Report, baseline: str) -> str:
    verdict = "❌ FAILED" if report.failed else "✅ passed"
    counts = ", ".join(f"{n} {k}" for k, n in sorted(report.counts.items())) or "no cases"
    lines = [f"### Gate {verdict}", "",
             f"Ratio to sdpa-flash vs the baseline `{baseline}` (tolerance floor ±{report.floor:.0%}): {counts}."]
    if report.nothing_compared:
        lines += ["", f"**{report.nothing_compared}**"]
    shown = sorted((c for c in report.cases if c.verdict != "not_run"),
                   key=lambda c: (c.verdict not in FAILING, c.case_id))
    if shown:
        lines.append("")
        lines += _table(GATE_COLUMNS, [
            (f"`{c.case_id}`", f"**{c.verdict}**" if c.verdict in FAILING else c.verdict,
             num(c.base_ratio, ".3f"), num(c.new_ratio, ".3f"), num(c.change, "+.1%"),
             num(c.tolerance, ".0%"), num(c.base_ms, ".3f"), num(c.new_ms, ".3f"), c.reason)
            for c in shown])
    return "\n".join(lines) + "\n"


def results_markdown(doc: dict, report: Report | None = None, baseline: str = "") -> str:
    env = doc.get("env") or {}
    parts = [gate_markdown(report, baseline)] if report is not None else []
    lines = [f"### sparsecli bench · {env.get('gpu') or '?'}", "",
             f"Median of `do_bench` (p20–p80), torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, "
             f"sparsecli {env.get('sparsecli', '?')} ({env.get('git_sha') or 'no git commit'})."]
    legend = provider_legend(doc["results"])
    if legend:
        lines.append(f"Providers: {legend}.")
    group = None
    for r in doc["results"]:
        if r["group_id"] != group:
            group = r["group_id"]
            lines += ["", f"**{group_title(r)}**", ""]
            lines += _table(RESULT_COLUMNS, [])
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"
        spread = f"{r['p20_ms']:.3f}–{r['p80_ms']:.3f}" if r.get("p20_ms") is not None else "—"
        lines.append("| " + " | ".join(_cell(c) for c in (
            r["provider"], num(r.get("median_ms"), ".3f"), spread, num(r.get("tflops_nnz"), ".1f"),
            num(r.get("tflops_dense"), ".1f"), num(r.get("speedup_vs_flash"), ".2f"),
            num(r.get("speedup_vs_flex"), ".2f"), num(r.get("peak_mem_mib"), ",.0f"),
            num(r.get("max_rel_err"), ".1e", dash="unchecked"), status)) + " |")
    parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def plan_markdown(rows: list[dict]) -> str:
    """The planned cases of a dry run as one table."""
    header = ("case_id", "density", "nnz blocks", "block")
    lines = [f"### {len(rows)} planned cases (dry run: nothing timed)", ""]
    lines += _table(header, [(f"`{r['case_id']}`", f"{r['density']:.1%}", r["nnz_blocks"], r["block"]) for r in rows])
    return "\n".join(lines) + "\n"
