"""Rich renderings of a layout report: the figures table and a small terminal heatmap."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

SHADES = " ░▒▓█"
PREVIEW_CELLS = 32


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def report_table(r, config) -> Table:
    t = Table(title=f"{r.kind} layout", show_header=False, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("sequence", f"{r.seq_len} tokens = {r.num_blocks} blocks of {r.block}")
    t.add_row("heads", f"{r.heads} ({r.distinct_head_layouts} distinct layout{'s' if r.distinct_head_layouts != 1 else ''})")
    t.add_row("non-zero blocks", f"{r.nonzero_blocks:,}")
    t.add_row("density", f"{r.density:.3%}  (= FLOPs vs dense attention)")
    lo, hi = min(r.density_per_head), max(r.density_per_head)
    if hi - lo > 1e-12:
        t.add_row("density per head", f"min {lo:.3%}  max {hi:.3%}")
    t.add_row("blocks per row", f"min {r.blocks_per_row_min}  mean {r.blocks_per_row_mean:.2f}  max {r.blocks_per_row_max}")
    empty = Text(str(r.empty_rows), style="bold yellow" if r.empty_rows else "")
    if r.empty_rows:
        empty.append(f"  (heads {r.heads_with_empty_rows}: these queries output zeros)")
    t.add_row("rows with no block", empty)
    if r.future_blocks is not None:
        t.add_row("blocks above diagonal", Text(str(r.future_blocks), style="bold red" if r.future_blocks else ""))
    t.add_row("scores memory / batch", f"{_bytes(r.scores_bytes_three_op)} three-op sparse vs {_bytes(r.scores_bytes_dense)} dense (fp16)")
    tiles = "  ".join(f"{w}-wide: {d:.2%}" if d is not None else f"{w}-wide: n/a" for w, d in r.tile_density.items())
    t.add_row("executed-tile density", tiles)
    if r.layers_to_full_reach is not None:
        t.add_row("layers to full reach", f"{r.layers_to_full_reach} (stacked layers until every query block sees every "
                  f"{'earlier ' if r.unidirectional else ''}key block)")
    elif r.full_reach_never:
        t.add_row("layers to full reach", Text("never: some query block can never see some key block", style="yellow"))
    else:
        t.add_row("layers to full reach", "not computed (over 1024 blocks)")
    for note in r.notes:
        t.add_row("note", Text(note, style="yellow"))
    return t


def layout_preview(head, label: str) -> Text:
    """Shade each character by the fraction of present blocks in the region it covers."""
    import torch

    nb = head.shape[0]
    cells = min(nb, PREVIEW_CELLS)
    k = -(-nb // cells)
    pad = (-nb) % k
    x = torch.nn.functional.pad(head.float()[None, None], (0, pad, 0, pad))
    frac = torch.nn.functional.avg_pool2d(x, k)[0, 0]
    lines = Text(f"\n{label}, query blocks down, key blocks across ({k}x{k} blocks per character):\n", style="dim")
    for row in frac:
        line = "".join(2 * (SHADES[0] if v == 0 else SHADES[min(4, 1 + int(v * 3.999))]) for v in row.tolist())
        lines.append(line + "\n", style="blue")
    return lines
