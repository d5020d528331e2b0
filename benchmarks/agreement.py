"""Run-to-run agreement of two results files: relative difference of every shared ok median.

    python benchmarks/agreement.py RUN1.json RUN2.json [--limit 0.03]

Prints one line per case beyond the limit and a summary; exit 1 if any case is beyond it.
"""
from __future__ import annotations

import argparse
import sys

from sparsecli.bench.results import load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--limit", type=float, default=0.03)
    args = ap.parse_args()
    a = {r["case_id"]: r for r in load(args.first)["results"] if r["status"] == "ok"}
    b = {r["case_id"]: r for r in load(args.second)["results"] if r["status"] == "ok"}
    shared = sorted(set(a) & set(b))
    diffs = {cid: b[cid]["median_ms"] / a[cid]["median_ms"] - 1.0 for cid in shared}
    beyond = {cid: d for cid, d in diffs.items() if abs(d) > args.limit}
    for cid, d in sorted(diffs.items(), key=lambda kv: -abs(kv[1])):
        mark = "  BEYOND" if cid in beyond else ""
        print(f"{d:+7.2%}  {a[cid]['median_ms']:9.4f} -> {b[cid]['median_ms']:9.4f} ms  {cid}{mark}")
    worst = max(diffs.values(), key=abs, default=0.0)
    print(f"{len(shared)} shared ok cases; worst {worst:+.2%}; {len(beyond)} beyond ±{args.limit:.0%}")
    return 1 if beyond else 0


if __name__ == "__main__":
    sys.exit(main())
