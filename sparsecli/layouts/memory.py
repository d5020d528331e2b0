"""How much memory building and analysing a layout takes, and a guard that refuses up front what
would not fit (instead of the allocator failing, or the kernel's OOM killer, minutes later).

The model was fitted to the peak RSS of ``sparsecli layout KIND --seq S --block 16 --heads H``
(report, preview and heatmap; ``scripts/layout_memory.py`` re-measures it): the int64 layout is
8 bytes per block and head; on top come per-head work arrays of a few bytes per block of one
head (the kind's construction, the report's NumPy passes, the heatmap's pooling) and the
interpreter with torch loaded.
"""
from __future__ import annotations

import os

LAYOUT_BYTES_PER_BLOCK = 8  # int64, per head
WORK_BYTES_PER_HEAD_BLOCK = 12  # per block of one head: the peak of the per-head passes
BASE_BYTES = 350 * 2**20  # Python + torch + numpy + matplotlib loaded
FIT_FRACTION = 0.85  # of the available memory; the rest is headroom for the estimate's error


def layout_peak_bytes(num_heads: int, seq_len: int, block: int, layouts: int = 1) -> int:
    """Estimated peak resident memory of building ``layouts`` layouts of ``num_heads`` heads at
    ``seq_len`` tokens and ``block`` (e.g. 2 for ``--vs`` or a union), reporting and drawing them."""
    nb = seq_len // block
    per_head = nb * nb
    return layouts * num_heads * per_head * LAYOUT_BYTES_PER_BLOCK + per_head * WORK_BYTES_PER_HEAD_BLOCK + BASE_BYTES


def available_bytes() -> int | None:
    """Memory a new allocation can get now: MemAvailable on Linux, else physical memory; None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_layout_fits(num_heads: int, seq_len: int, block: int, layouts: int = 1) -> None:
    """Raise ValueError, naming the figures and what to change, if the layout would not fit."""
    if block <= 0 or seq_len <= 0 or seq_len % block:
        return  # make_layout explains these
    need = layout_peak_bytes(num_heads, seq_len, block, layouts)
    have = available_bytes()
    if have is not None and need > FIT_FRACTION * have:
        nb = seq_len // block
        raise ValueError(
            f"{layouts * num_heads} head layout{'s' if layouts * num_heads != 1 else ''} of {nb} x {nb} blocks "
            f"need about {need / 2**30:.1f} GiB and {have / 2**30:.1f} GiB is available; "
            "use a larger --block, fewer --heads or a shorter --seq")
