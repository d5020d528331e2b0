"""Matplotlib figures (Figure API only: no pyplot, no global backend switch).

Heatmaps put query blocks on y and key blocks on x, one panel per distinct head layout. Layouts
wider than ``MAX_PIXELS`` blocks are pooled: each pixel covers k x k blocks and is shaded by the
fraction of them that are present, so a 25%-dense region reads as 25%, not as solid, and a thin
diagonal stays visible as a lighter line. The title states k.
"""
from __future__ import annotations

import math
import re
import textwrap
import warnings
from pathlib import Path

import torch

from ..plumbing.output_files import write_atomic

MAX_PANELS = 8
MAX_PIXELS = 1024
PANEL_INCHES = 4.2
TITLE_POINTS = 11
ABSENT, PRESENT = "#f4f1ea", "#1f4e79"
ONLY_A, ONLY_B, BOTH = "#c0392b", "#2874a6", "#9a9a9a"  # difference heatmaps
STRIP_PIXELS = 64  # pooled pixel rows converted to float at a time (bounds the memory of a pooled plot)


def pooling_factor(nb: int) -> int:
    return max(1, math.ceil(nb / MAX_PIXELS))


def pooled_fraction(head: torch.Tensor, k: int) -> torch.Tensor:
    """(ceil(nb/k),)*2 float: the fraction of present blocks among the real blocks each pixel covers."""
    nb = head.shape[0]
    n = math.ceil(nb / k)
    if k == 1:
        return head.float()
    out = torch.empty(n, n)
    pad = n * k - nb
    cols = torch.full((n,), float(k))
    cols[-1] = k - pad
    for r0 in range(0, n, STRIP_PIXELS):
        r1 = min(n, r0 + STRIP_PIXELS)
        strip = head[r0 * k:r1 * k].float()
        strip = torch.nn.functional.pad(strip, (0, pad, 0, (r1 - r0) * k - strip.shape[0]))
        sums = strip.view(r1 - r0, k, n, k).sum(dim=(1, 3))
        rows = torch.tensor([min(k, nb - r * k) for r in range(r0, r1)], dtype=torch.float32)
        out[r0:r1] = sums / (rows[:, None] * cols[None, :])
    return out


def layout_heatmap(layout: torch.Tensor, groups, title: str, path: str | Path, extra=()) -> Path:
    """Write one panel per (first head, members) group to ``path`` (PNG, atomically) and return it.
    ``extra``: more panels after those, as ``(title, draw(ax))`` pairs."""
    return save(layout_figure(layout, groups, title, extra), path)


def difference_heatmap(a: torch.Tensor, b: torch.Tensor, groups, labels: tuple[str, str], title: str,
                       path: str | Path, extra=()) -> Path:
    """Write ``difference_figure`` to ``path`` (atomically) and return it."""
    return save(difference_figure(a, b, groups, labels, title, extra), path)


class MissingGlyphWarning(UserWarning):
    """Characters (of a title) that the plot's font cannot draw: matplotlib draws boxes there."""


# matplotlib warns once per missing character, naming its own source line: "Glyph 27880
# (\N{CJK UNIFIED IDEOGRAPH-6CE8}) missing from font(s) DejaVu Sans."
_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font\(s\) (.+?)\.?$")


def save(fig, path: str | Path) -> Path:
    """``fig`` to ``path``, atomically; matplotlib's per-character glyph warnings become one
    ``MissingGlyphWarning`` that names the characters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_atomic(path, lambda tmp: fig.savefig(tmp, format=_format(path)))
    missing, fonts = {}, set()
    for w in caught:
        match = _MISSING_GLYPH.match(str(w.message))
        if match is None:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        else:
            missing[chr(int(match.group(1)))] = None
            fonts.add(match.group(2))
    if missing:
        warnings.warn(MissingGlyphWarning(f"the plot's font ({', '.join(sorted(fonts))}) cannot draw "
                                          f"{''.join(missing)}: {written} shows boxes there"), stacklevel=2)
    return written


def layout_figure(layout: torch.Tensor, groups, title: str, extra=()):
    """One panel per (first head, members) group, each pixel shaded by the fraction present."""
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("layout", [ABSENT, PRESENT])
    nb = layout.shape[-1]
    k = pooling_factor(nb)

    def image(first):
        return pooled_fraction(layout[first].bool(), k).numpy()

    return _panels(groups, nb, k, title, lambda ax, first: ax.imshow(
        image(first), cmap=cmap, vmin=0, vmax=1, interpolation="antialiased", extent=(-0.5, nb - 0.5, nb - 0.5, -0.5)),
        extra=extra)


def difference_figure(a: torch.Tensor, b: torch.Tensor, groups, labels: tuple[str, str], title: str, extra=()):
    """Panels of what ``a`` has that ``b`` lacks and the reverse (and, grey, what both have);
    ``groups`` are the distinct head pairs. Pooled pixels mix the colours by fraction."""
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    nb = a.shape[-1]
    k = pooling_factor(nb)
    colours = [torch.tensor(to_rgb(c)) for c in (ABSENT, ONLY_A, ONLY_B, BOTH)]

    def image(first):
        x, y = a[first].bool(), b[first].bool()
        fa, fb, both = (pooled_fraction(m, k) for m in (x & ~y, y & ~x, x & y))
        none = 1 - fa - fb - both
        rgb = sum(f[..., None] * c for f, c in zip((none, fa, fb, both), colours))
        return rgb.clamp(0, 1).numpy()

    legend = [Patch(color=ONLY_A, label=f"only {labels[0]}"), Patch(color=ONLY_B, label=f"only {labels[1]}"),
              Patch(color=BOTH, label="both")]
    return _panels(groups, nb, k, title, lambda ax, first: ax.imshow(
        image(first), interpolation="antialiased", extent=(-0.5, nb - 0.5, nb - 0.5, -0.5)), legend, extra)


# Images go through matplotlib's "antialiased" resampling: a 1024-pixel image in a ~500-pixel panel
# is averaged down (nearest-neighbour would drop every other row and break thin diagonals into
# dashes), while small layouts, enlarged more than 3x, stay crisp nearest-neighbour cells.


def _panels(groups, nb: int, k: int, title: str, draw, legend=None, extra=()):
    from matplotlib.figure import Figure

    shown = groups[:MAX_PANELS]
    panels = [(f"head {first}" if len(members) == 1 else f"heads {_ranges(members)}",
               lambda ax, first=first: draw(ax, first)) for first, members in shown] + list(extra)
    cols = min(len(panels), 4)
    rows = math.ceil(len(panels) / cols)
    width = PANEL_INCHES * cols
    fig = Figure(figsize=(width, PANEL_INCHES * rows + 0.9), dpi=150, layout="constrained")
    for i, (panel_title, draw_panel) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        draw_panel(ax)
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("key block")
        ax.set_ylabel("query block")
        if nb <= 32:  # cell borders only where they are legible
            ax.set_xticks([x - 0.5 for x in range(nb + 1)], minor=True)
            ax.set_yticks([y - 0.5 for y in range(nb + 1)], minor=True)
            ax.grid(which="minor", color="white", linewidth=0.8)
            ax.tick_params(which="minor", length=0)
    if k > 1:
        title += f" · {k}x{k} blocks per pixel, shaded by the fraction present"
    if len(groups) > len(shown):
        title += f" · first {len(shown)} of {len(groups)} distinct head layouts (use --head)"
    if legend:
        fig.legend(handles=legend, loc="outside lower center", ncols=len(legend), fontsize=8, frameon=False)
    fig.suptitle(_wrap(title, width), fontsize=TITLE_POINTS)
    return fig


def _wrap(title: str, width_inches: float) -> str:
    """Break the title into lines that fit the figure (a one-panel figure is only 4.2 in wide)."""
    chars = max(20, int(width_inches * 72 / (TITLE_POINTS * 0.62)))
    return "\n".join(textwrap.wrap(title, chars, break_on_hyphens=False))


def _format(path) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return suffix or "png"


def _ranges(heads: list[int]) -> str:
    out, start = [], heads[0]
    for a, b in zip(heads, heads[1:] + [None]):
        if b != a + 1:
            out.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ",".join(out)
