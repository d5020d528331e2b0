"""``bench --model``'s output: a Rich table and the GitHub table docs/hf-decoders.md shows."""
from __future__ import annotations


def results_table(doc: dict):
    """A Rich table of a model bench document."""
    from rich.table import Table

    table = Table(title=f"{doc['config']['model']} on {doc['config']['layout']} ({doc['env'].get('gpu') or 'no GPU'})")
    for col in ("case", "status", "ms", "tokens/s", "peak GiB", "vs sdpa", "vs flex", "bound", "of bound", "TB/s",
                "note"):
        table.add_column(col, justify="left" if col in ("case", "status", "note") else "right")

    def num(v, fmt):
        return "" if v is None else format(v, fmt)

    for r in doc["results"]:
        bound = (r.get("flop_bound") or r.get("byte_bound") or {}).get("ratio")
        note = r.get("reason") or (f"rel err {r['max_rel_err']:.2g} (tol {r['tolerance']:.2g})"
                                   if r.get("kind") == "check" and r.get("max_rel_err") is not None else "")
        table.add_row(r["case_id"], r["status"], num(r.get("step_ms"), ".2f"), num(r.get("tokens_per_s"), ",.0f"),
                      num(r.get("peak_mem_gib"), ".1f"), num(r.get("speedup_vs_sdpa"), ".2f"),
                      num(r.get("speedup_vs_flex"), ".2f"), num(bound, ".2f"), num(r.get("share_of_bound"), ".0%"),
                      num(r.get("effective_tb_s"), ".2f"), note)
    return table


def results_markdown(doc: dict) -> str:
    """The timed rows as a GitHub table (what docs/hf-decoders.md shows)."""
    lines = ["| run | provider | ms | tokens/s | peak GiB | vs SDPA | vs flex | bound | of bound | TB/s read |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"]

    def num(v, fmt):
        return "" if v is None else format(v, fmt)

    for r in doc["results"]:
        if r.get("kind") == "check":
            continue
        run = (f"train S={r['seq_len']} B={r['batch']}" if r["kind"] == "train"
               else f"decode {r['mode']} C={r['seq_len']} B={r['batch']}")
        bound = (r.get("flop_bound") or r.get("byte_bound") or {}).get("ratio")
        if r["status"] != "ok":
            lines.append(f"| {run} | {r['provider']} | {r['status']}: {r.get('reason') or ''} |  |  |  |  | "
                         f"{num(bound, '.2f')} |  |  |")
            continue
        lines.append(f"| {run} | {r['provider']} | {num(r.get('step_ms'), '.1f')} | {num(r.get('tokens_per_s'), ',.0f')} "
                     f"| {num(r.get('peak_mem_gib'), '.1f')} | {num(r.get('speedup_vs_sdpa'), '.2f')}x "
                     f"| {num(r.get('speedup_vs_flex'), '.2f')} | {num(bound, '.2f')} "
                     f"| {num(r.get('share_of_bound'), '.0%')} | {num(r.get('effective_tb_s'), '.2f')} |")
    return "\n".join(lines) + "\n"
