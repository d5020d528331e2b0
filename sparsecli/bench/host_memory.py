"""Refuse, before anything is built, a sweep whose layouts cannot fit in this machine's memory.

Every shape's layout is built on the host, an int64 ``(H, nb, nb)`` tensor, and a long enough
``--seq`` asks for terabytes: without this guard the allocator raises deep inside
``make_layout`` (or the OOM killer ends the process) instead of one line saying what
to change. Shapes are built one at a time, so the largest one is what must fit.
"""
from __future__ import annotations

import os

from ..errors import UserError

# Peak RSS per layout entry measured while building each bundled preset's layout at 1,024 blocks
# a side and its causal figures: 10.2-10.8 bytes (the int64 layout itself, make_layout's
# temporaries, the figures' bool copies). Rounded up, so the guard errs on refusing.
LAYOUT_BYTES_PER_ENTRY = 12
USABLE_FRACTION = 0.8  # of physical memory; the rest is the process, torch and everyone else


def layout_bytes(heads: int, seq_len: int, block: int) -> int:
    nb = seq_len // block
    return LAYOUT_BYTES_PER_ENTRY * heads * nb * nb


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None  # unknown (not POSIX): nothing to check against


def check_layouts_fit(plan, seq_overridden: bool, have: int | None = None) -> None:
    """UserError naming the sequence length, its layout's size and the fix, if one cannot fit."""
    from .cases import preset_of, shapes

    have = physical_memory() if have is None else have
    if have is None:
        return
    for shape in shapes(plan):
        block = preset_of(plan, shape).sparsity.values["block"]
        need = layout_bytes(shape.heads, shape.seq_len, block)
        if need > USABLE_FRACTION * have:
            nb = shape.seq_len // block
            what = f"--seq {shape.seq_len}" if seq_overridden else f"{shape.preset}: seq_len {shape.seq_len}"
            raise UserError(
                f"{what}: the {shape.preset} layout ({shape.heads} heads x {nb:,}x{nb:,} blocks of {block}) "
                f"needs {_gib(need)} of memory to build, this machine has {_gib(have)}; "
                "use a shorter --seq or a preset with a larger block")


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"
