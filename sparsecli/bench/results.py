"""The results file: ``{"schema_version", "env", "config", "results"}``, JSON and CSV.

Rows are flat and their keys carry units (``median_ms``, ``peak_mem_mib``, ``tflops_*`` in
TFLOP/s), so the CSV is the same columns. A baseline is a results file with a ``gate`` section
(see compare.py). Files are written through ``output_files``: a crash never leaves half a baseline.
"""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from ..errors import UserError

SCHEMA_VERSION = 1
COLUMNS = (
    "case_id", "group_id", "preset", "provider", "pass", "dtype", "seq_len", "batch", "heads",
    "head_dim", "block", "causal", "layout_sha", "nnz_blocks", "density", "status", "reason",
    "median_ms", "p20_ms", "p80_ms", "tflops_nnz", "tflops_dense", "speedup_vs_flash",
    "speedup_vs_flex", "peak_mem_mib", "max_rel_err", "check", "index_build_ms",
)
STATUSES = ("ok", "wrong", "oom", "unavailable", "unsupported", "failed")


def _git_sha() -> str | None:
    """The checkout's commit (+ "-dirty"), else what CI says it built (a copy without .git)."""
    here = Path(__file__).resolve().parent
    fallback = os.environ.get("GITHUB_SHA") or os.environ.get("SPARSECLI_GIT_SHA")
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return fallback
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return fallback


def capture_env() -> dict:
    """What the numbers depend on: GPU, driver-side versions, library versions, commit."""
    import torch

    from .. import __version__

    env = {
        "sparsecli": __version__, "git_sha": _git_sha(), "python": platform.python_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "triton": None,
        "cudnn": None, "gpu": None, "capability": None, "gpu_memory_gib": None, "sm_count": None,
        "host": platform.node(), "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   sm_count=p.multi_processor_count, cudnn=torch.backends.cudnn.version())
    return env


def document(rows: list[dict], env: dict, config: dict) -> dict:
    return {"schema_version": SCHEMA_VERSION, "env": env, "config": config,
            "results": [{c: _clean(r.get(c)) for c in COLUMNS} for r in rows]}


def to_json(doc: dict) -> str:
    doc = {**doc, "results": [{k: _clean(v) for k, v in r.items()} for r in doc["results"]]}
    return json.dumps(doc, indent=1, allow_nan=False) + "\n"


def _clean(value):
    """inf/NaN (a kernel that wrote NaN has infinite error) become strings JSON can hold."""
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return buf.getvalue()


def load(path: Path) -> dict:
    """Read and validate a results (or baseline) file; problems are one line."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(doc, dict) or "results" not in doc or not isinstance(doc["results"], list):
        raise UserError(f"{path}: not a sparsecli bench results file (no 'results' list)")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise UserError(f"{path}: schema_version {version!r} is not supported (this sparsecli reads "
                        f"{SCHEMA_VERSION}); re-run sparsecli bench to regenerate it")
    for i, row in enumerate(doc["results"]):
        _check_row(path, i, row)
    gate = doc.get("gate")
    if gate is not None:
        if not isinstance(gate, dict):
            raise UserError(f"{path}: 'gate' is not a mapping of case_id to entries")
        for cid, entry in gate.items():
            if not isinstance(entry, dict) or "ratio" not in entry:
                raise UserError(f"{path}: gate[{cid!r}] has no key 'ratio'")
            if not _positive(entry["ratio"]):
                raise UserError(f"{path}: gate[{cid!r}] 'ratio' must be a positive number, got {entry['ratio']!r}")
    return doc


# Every key the results table, the plot and the gate index directly (``row[key]``): a file
# without one would otherwise crash them with a KeyError. Values may be null where not ok.
ROW_KEYS = ("case_id", "group_id", "preset", "provider", "pass", "dtype", "seq_len", "batch", "heads",
            "head_dim", "status", "median_ms", "p20_ms", "p80_ms", "tflops_nnz")
TIMES = ("median_ms", "p20_ms", "p80_ms")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(value) -> bool:
    return _number(value) and value > 0


def _check_row(path, i: int, row) -> None:
    if not isinstance(row, dict):
        raise UserError(f"{path}: results[{i}] is not an object")
    for key in ROW_KEYS:
        if key not in row:
            name = f" ({row['case_id']})" if isinstance(row.get("case_id"), str) else ""
            raise UserError(f"{path}: results[{i}]{name} has no key {key!r}")
    # The gate divides by these and the table formats them as numbers.
    timed = row["status"] == "ok" or row["p20_ms"] is not None
    for key in TIMES:
        value = row[key]
        if (timed or value is not None) and not (_positive(value) if key == "median_ms" else _number(value)):
            raise UserError(f"{path}: results[{i}] ({row['case_id']}) {key!r} must be a "
                            f"{'positive ' if key == 'median_ms' else ''}number, got {value!r}")
