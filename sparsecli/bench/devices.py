"""A sweep spread over the GPUs of one host: one worker process per GPU, merged into one result.

Each worker is ``python -m sparsecli.bench.worker`` pinned to its GPU with
``CUDA_VISIBLE_DEVICES``; it rebuilds the plan from the same presets and overrides, runs the
case ids it was given, and streams each finished row back as one JSON line. Cases are dealt out
by *group* (one shape and pass, every provider): the providers a ratio or speedup compares are
always timed on the same GPU, from the same inputs. A worker that dies leaves rows saying so;
the other GPUs' rows still land.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass

from ..plumbing.errors import UserError
from .cases import BWD_FLOP_FACTOR, Case, Plan

WORKER = [sys.executable, "-m", "sparsecli.bench.worker"]
STDERR_TAIL = 20  # lines of a worker's stderr kept for the reason of its missing rows
# Per-case cost for dealing groups out: every case spends about the same do_bench budget, plus
# set-up and checking work that grows with the dense FLOPs of the shape (1 unit per 4 TFLOP).
FLOPS_PER_UNIT = 4e12


def parse_devices(text: str, count: int) -> list[int]:
    """``"all"`` or ``"0,2"`` -> GPU indices, each checked against the ``count`` visible GPUs."""
    if count < 1:
        raise UserError("--devices: no CUDA GPU found")
    if text.strip().lower() == "all":
        return list(range(count))
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if not parts:
        raise UserError("--devices is empty; give GPU indices, e.g. --devices 0,1, or --devices all")
    try:
        devices = [int(p) for p in parts]
    except ValueError:
        raise UserError(f"--devices takes GPU indices (e.g. 0,1) or 'all', got {text!r}") from None
    bad = [d for d in devices if not 0 <= d < count]
    if bad:
        raise UserError(f"--devices: GPU {bad[0]} does not exist (this host shows {count}: 0..{count - 1})")
    twice = next((d for i, d in enumerate(devices) if d in devices[:i]), None)
    if twice is not None:
        raise UserError(f"--devices lists GPU {twice} twice; give each GPU once")
    return devices


def case_cost(case: Case) -> float:
    s = case.shape
    factor = {"fwd": 1.0, "bwd": BWD_FLOP_FACTOR, "fwd+bwd": 1.0 + BWD_FLOP_FACTOR}[case.pass_]
    dense = 4.0 * s.batch * s.heads * s.seq_len * s.seq_len * s.head_dim * factor
    return 1.0 + dense / FLOPS_PER_UNIT


def assign(plan: Plan, devices: list[int]) -> dict[int, list[Case]]:
    """Groups dealt to devices, largest first to the least loaded; each device's cases in plan order."""
    groups: dict[str, list[Case]] = {}
    for c in plan.cases:
        groups.setdefault(c.group_id, []).append(c)
    load = {d: 0.0 for d in devices}
    chosen: dict[str, int] = {}
    for gid, cases in sorted(groups.items(), key=lambda kv: -sum(map(case_cost, kv[1]))):
        d = min(devices, key=lambda dev: (load[dev], devices.index(dev)))
        chosen[gid] = d
        load[d] += sum(map(case_cost, cases))
    return {d: [c for c in plan.cases if chosen[c.group_id] == d] for d in devices}


@dataclass
class _Worker:
    device: int
    cases: list
    proc: subprocess.Popen | None = None
    stderr: list | None = None
    error: str = ""


def run_on_devices(plan: Plan, spec: dict, devices: list[int], on_row, failed_row) -> list[dict]:
    """Run ``plan`` over ``devices``; ``spec`` is what a worker needs besides its case ids (see
    worker.py), ``failed_row(case, reason)`` the row of a case its worker never reported."""
    workers = [_Worker(d, cases) for d, cases in assign(plan, devices).items() if cases]
    rows: dict[str, dict] = {}
    lock = threading.Lock()
    threads = []
    for w in workers:
        try:
            w.proc = _launch(w.device, {**spec, "case_ids": [c.case_id for c in w.cases]})
        except OSError as e:
            w.error = f"GPU {w.device}: worker did not start: {e}"
            continue
        w.stderr = []
        threads.append(threading.Thread(target=_read_rows, args=(w, rows, lock, on_row), daemon=True))
        threads.append(threading.Thread(target=_read_stderr, args=(w,), daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for w in workers:
        if w.proc is not None:
            code = w.proc.wait()
            tail = next((line for line in reversed(w.stderr) if line.strip()), "")
            w.error = f"GPU {w.device}: worker exited with code {code}" + (f": {tail.strip()[:200]}" if tail else "")
        for c in w.cases:
            if c.case_id not in rows:
                rows[c.case_id] = failed_row(c, w.error)
                on_row(rows[c.case_id])
    return [rows[c.case_id] for c in plan.cases]


def pin(device: int) -> str:
    """The CUDA_VISIBLE_DEVICES value that leaves exactly this process's GPU ``device`` visible.
    Indices are relative to what this process sees, so an inherited CUDA_VISIBLE_DEVICES=2,3
    makes GPU 1 the entry "3" (an id or a UUID), not the physical GPU 1."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return visible[device] if "CUDA_VISIBLE_DEVICES" in os.environ and device < len(visible) else str(device)


def _launch(device: int, spec: dict) -> subprocess.Popen:
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=pin(device), SPARSECLI_BENCH_DEVICE=str(device))
    proc = subprocess.Popen(WORKER, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    return proc


def _read_rows(w: _Worker, rows: dict, lock: threading.Lock, on_row) -> None:
    mine = {c.case_id for c in w.cases}
    for line in w.proc.stdout:
        try:
            row = json.loads(line)["row"]
        except (ValueError, KeyError, TypeError):
            continue  # stray output of a library on stdout is not a row
        if row.get("case_id") not in mine:
            continue
        row["device"] = w.device
        with lock:
            rows[row["case_id"]] = row
            on_row(row)


def _read_stderr(w: _Worker) -> None:
    for line in w.proc.stderr:
        w.stderr.append(line)
        del w.stderr[:-STDERR_TAIL]
