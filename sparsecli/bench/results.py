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

from ..plumbing.errors import UserError

SCHEMA_VERSION = 1
COLUMNS = (
    "case_id", "group_id", "preset", "provider", "pass", "dtype", "seq_len", "batch", "heads",
    "head_dim", "block", "causal", "layout_sha", "nnz_blocks", "density", "status", "reason",
    "median_ms", "p20_ms", "p80_ms", "tflops_nnz", "tflops_dense", "speedup_vs_flash",
    "speedup_vs_flex", "peak_mem_mib", "max_rel_err", "check", "index_build_ms", "device", "backward",
)
STATUSES = ("ok", "wrong", "oom", "unavailable", "unsupported", "failed")


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # GIT_DIR / GIT_WORK_TREE in the caller's environment would point git at another repository.
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=10)


def git_sha(package_dir: Path | None = None) -> str | None:
    """The commit of the source tree this sparsecli runs from (+ "-dirty"), or None.

    Only a checkout that tracks this very package counts (an editable install): a wheel in a
    virtual environment inside some other repository sits in that repository's tree too, but
    its files are not tracked there, so that repository's commit is never recorded.
    """
    here = (package_dir or Path(__file__).resolve().parents[1]).resolve()
    try:
        if _git(["ls-files", "--error-unmatch", "--", "__init__.py"], here).returncode != 0:
            return None  # not in a repository, or in one that does not track this package
        sha = _git(["rev-parse", "HEAD"], here)
        if sha.returncode != 0:
            return None
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], here).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def capture_env(devices: list[int] | None = None) -> dict:
    """What the numbers depend on: GPU, driver-side versions, library versions, commit.
    ``devices``: the GPUs a multi-GPU sweep ran on (one model; the first one's properties)."""
    import torch

    from .. import __version__

    env = {
        "sparsecli": __version__, "git_sha": git_sha(), "python": platform.python_version(),
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
        p = torch.cuda.get_device_properties(devices[0] if devices else torch.cuda.current_device())
        env.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                   sm_count=p.multi_processor_count, cudnn=torch.backends.cudnn.version())
    if devices:
        env["devices"] = list(devices)
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


def to_csv(rows: list[dict], columns=COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
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
