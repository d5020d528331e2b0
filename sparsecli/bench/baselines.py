"""Per-GPU baselines: which baseline file a run is gated against, and the like-for-like check.

A run's ratio to sdpa-flash depends on the GPU model (an H200's bandwidth makes the memory-bound
three-op path 25% "faster" than on an H100), so a baseline only speaks for the model it was
measured on. ``--baseline`` takes a file or a directory of per-GPU files named by the model's
slug (``benchmarks/baselines/nvidia-h100-80gb-hbm3.json``); from a directory the runner's file
is picked. A baseline of another model is refused (exit 1) unless ``--allow-gpu-mismatch``.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..plumbing.errors import UserError

MISMATCH_FLAG = "--allow-gpu-mismatch"


def gpu_slug(name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3``: a file name for a GPU model."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise UserError(f"GPU name {name!r} gives no usable baseline file name")
    return slug


def run_gpu(doc: dict, what: str) -> str:
    """The GPU model a results document was measured on; an error if it does not say."""
    gpu = (doc.get("env") or {}).get("gpu")
    if not gpu:
        raise UserError(f"{what} records no GPU model (env.gpu), so no baseline can be matched to it")
    return gpu


def resolve(baseline: Path, gpu: str) -> Path:
    """The baseline file for ``gpu``: ``baseline`` itself, or its per-GPU file if it is a directory."""
    baseline = Path(baseline)
    return baseline / f"{gpu_slug(gpu)}.json" if baseline.is_dir() else baseline


def require_existing(path: Path, baseline: Path, gpu: str) -> None:
    if path.exists():
        return
    if path != Path(baseline):
        raise UserError(f"{baseline} has no baseline for {gpu} ({path.name}); record one with "
                        f"--baseline {baseline} --update-baseline")
    raise UserError(f"{path}: no such file")


def check_same_gpu(base_doc: dict, base_path: Path, gpu: str, allow_mismatch: bool) -> None:
    """Refuse a baseline measured on another GPU model: its ratios are not this GPU's."""
    base_gpu = (base_doc.get("env") or {}).get("gpu")
    if base_gpu == gpu or allow_mismatch:
        return
    measured = f"measured on {base_gpu}" if base_gpu else "without a recorded GPU model"
    raise UserError(f"baseline {base_path} was {measured}, this run on {gpu}: ratios are not comparable "
                    f"across GPU models; use that GPU's baseline (a directory picks it) or {MISMATCH_FLAG}")


def select(baseline: Path, gpu: str, *, allow_mismatch: bool, updating: bool) -> tuple[Path, dict | None]:
    """(the baseline file for ``gpu``, its document or None when ``updating`` creates it)."""
    from .results import load

    path = resolve(baseline, gpu)
    if updating and not path.exists():
        return path, None
    require_existing(path, baseline, gpu)
    doc = load(path)
    check_same_gpu(doc, path, gpu, allow_mismatch)
    return path, doc
