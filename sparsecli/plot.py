"""Matplotlib figures (Figure API only: no pyplot, no global backend switch).

Heatmaps put query blocks on y and key blocks on x, one panel per distinct head layout. Large
layouts are max-pooled to at most ``MAX_PIXELS`` cells a side so a one-block diagonal at nb=4096
stays visible instead of being lost to image resampling.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

MAX_PANELS = 8
MAX_PIXELS = 1024
PANEL_INCHES = 4.2
COLOURS = ("#f4f1ea", "#1f4e79")  # absent, present


def _pooled(head: torch.Tensor) -> tuple[torch.Tensor, int]:
    nb = head.shape[0]
    k = max(1, math.ceil(nb / MAX_PIXELS))
    if k == 1:
        return head.float(), 1
    pad = (-nb) % k
    x = torch.nn.functional.pad(head.float()[None, None], (0, pad, 0, pad))
    return torch.nn.functional.max_pool2d(x, k)[0, 0], k


def layout_heatmap(layout: torch.Tensor, groups, title: str, path: str | Path) -> Path:
    """Write one panel per (first head, members) group to ``path`` (PNG) and return the path."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    shown = groups[:MAX_PANELS]
    cols = min(len(shown), 4)
    rows = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows + 0.6), dpi=150, layout="constrained")
    cmap = ListedColormap(COLOURS)
    nb = layout.shape[-1]
    for i, (first, members) in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        img, k = _pooled(layout[first])
        ax.imshow(img.numpy(), cmap=cmap, vmin=0, vmax=1, interpolation="nearest",
                  extent=(-0.5, nb - 0.5, nb - 0.5, -0.5))
        label = f"head {first}" if len(members) == 1 else f"heads {_ranges(members)}"
        if k > 1:
            label += f"  ({k}x{k} blocks per pixel)"
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("key block")
        ax.set_ylabel("query block")
        if nb <= 32:  # cell borders only where they are legible
            ax.set_xticks([x - 0.5 for x in range(nb + 1)], minor=True)
            ax.set_yticks([y - 0.5 for y in range(nb + 1)], minor=True)
            ax.grid(which="minor", color="white", linewidth=0.8)
            ax.tick_params(which="minor", length=0)
    if len(groups) > len(shown):
        title += f"  —  first {len(shown)} of {len(groups)} distinct head layouts (use --head)"
    fig.suptitle(title, fontsize=11)
    path = Path(path)
    fig.savefig(path)
    return path


def _ranges(heads: list[int]) -> str:
    out, start = [], heads[0]
    for a, b in zip(heads, heads[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ",".join(out)
