"""One GPU's share of a multi-GPU sweep (see devices.py): ``python -m sparsecli.bench.worker``.

Reads a JSON spec on stdin, ``{"presets": [refs], "layout": {"path", "block", "attention"} or null,
"overrides": {...}, "case_ids": [...], "warmup_ms", "rep_ms", "check"}``, rebuilds the plan
exactly as the parent did, runs the given cases on the one GPU ``CUDA_VISIBLE_DEVICES`` leaves
visible, and prints each finished row as one JSON line ``{"row": {...}}`` on stdout (flushed, so
a crash loses only unfinished rows).
"""
from __future__ import annotations

import json
import sys

from .cases import Overrides, Plan, expand


def plan_of(spec: dict) -> Plan:
    """The parent's plan, cut to this worker's case ids."""
    from ..layouts.presets import load_preset

    from .file_preset import layout_file_preset

    overrides = Overrides(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in (spec.get("overrides") or {}).items()})
    presets = [load_preset(ref) for ref in spec["presets"]]
    if spec.get("layout"):
        layout = spec["layout"]
        presets.append(layout_file_preset(layout["path"], layout["block"], layout.get("attention")))
    plan = expand(presets, overrides)
    wanted = set(spec["case_ids"])
    plan.cases = [c for c in plan.cases if c.case_id in wanted]
    return plan


def run_spec(spec: dict, device: str = "cuda", timer=None, out=None) -> None:
    from .runner import Runner, RunOptions
    from .timing import TimingConfig

    out = out or sys.stdout

    def emit(row):
        out.write(json.dumps({"row": row}) + "\n")
        out.flush()

    opts = RunOptions(device=device, timing=TimingConfig(spec["warmup_ms"], spec["rep_ms"]),
                      check=spec["check"], timer=timer)
    Runner(plan_of(spec), opts, emit).run()


def main() -> None:
    run_spec(json.loads(sys.stdin.read()))


if __name__ == "__main__":
    main()
