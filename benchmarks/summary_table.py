"""One README-style markdown row per case group of a results file: median ms per provider.

    python benchmarks/summary_table.py RUN.json

Columns are the providers the file holds (in bench order); a provider that did not run shows its
status instead of a time. The last columns are our fused kernel's speedup over sdpa-flash and,
when they ran, over FlashAttention-4 and Flex's FLASH backend.
"""
from __future__ import annotations

import argparse
import sys

from sparsecli.bench.results import load
from sparsecli.layouts.presets import PROVIDERS

VERSUS = ("sdpa-flash", "fa4", "flex-flash")


def table(doc: dict) -> str:
    rows = doc["results"]
    providers = [p for p in PROVIDERS if any(r["provider"] == p for r in rows)]
    groups: dict[str, dict] = {}
    for r in rows:
        groups.setdefault(r["group_id"], {})[r["provider"]] = r
    versus = [p for p in VERSUS if p in providers and "sparse" in providers]
    env = doc.get("env") or {}
    lines = [f"{env.get('gpu', '?')} (torch {env.get('torch', '?')}, triton {env.get('triton', '?')}), median ms:", "",
             "| case | density | " + " | ".join(providers) + "".join(f" | sparse vs {p}" for p in versus) + " |",
             "|---|---|" + "---|" * (len(providers) + len(versus))]
    for by_provider in groups.values():
        first = next(iter(by_provider.values()))
        case = f"{first['preset']} {first['pass']} S{first['seq_len']}"
        density = f"{first['density']:.1%}" if first.get("density") is not None else "?"
        cells = ["—" if r is None else f"{r['median_ms']:.4g}" if r["status"] == "ok" else r["status"]
                 for r in (by_provider.get(p) for p in providers)]
        ours = by_provider.get("sparse")
        for p in versus:
            other = by_provider.get(p)
            ok = ours and other and ours["status"] == other["status"] == "ok"
            cells.append(f"{other['median_ms'] / ours['median_ms']:.1f}×" if ok else "—")
        lines.append(f"| {case} | {density} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    sys.stdout.write(table(load(ap.parse_args().results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
