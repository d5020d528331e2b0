"""``sparsecli layout``: build a layout from a kind (or a preset), report it, draw it, export it."""
from __future__ import annotations

import json
import os
import random
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UserError
from ..kinds import KINDS, PARAMS, kinds_using
from .app import app
from .console import err_console, out_console
from .render import layout_preview, report_table

Mode = Enum("Mode", {m: m for m in KINDS}, type=str)
Attention = Enum("Attention", {a: a for a in PARAMS["attention"].choices}, type=str)


class Format(str, Enum):
    table = "table"
    json = "json"


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x != ""]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, e.g. 0,4 — got {text!r}") from None


CFG = "Layout parameters (DeepSpeed's arguments)"
OUT = "Output"


@app.command(no_args_is_help=True)
def layout(
    kind: Annotated[Optional[Mode], typer.Argument(help="Layout kind (or give --preset).", show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", help="Bundled preset name or YAML path.")] = None,
    seq: Annotated[Optional[int], typer.Option("--seq", "-s", help="Sequence length in tokens [default: preset's, else 4096].")] = None,
    block: Annotated[Optional[int], typer.Option(help="Block size [default: 16, DeepSpeed's].", rich_help_panel=CFG)] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", "-H", help="Attention heads (num_heads) [default: 16].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="random.seed() before make_layout, for the random kinds [default: the preset's seed, else 0].")] = None,
    different_layout_per_head: Annotated[Optional[bool], typer.Option(help=PARAMS["different_layout_per_head"].help, rich_help_panel=CFG)] = None,
    num_local_blocks: Annotated[Optional[int], typer.Option(help=PARAMS["num_local_blocks"].help, rich_help_panel=CFG)] = None,
    num_global_blocks: Annotated[Optional[int], typer.Option(help=PARAMS["num_global_blocks"].help, rich_help_panel=CFG)] = None,
    attention: Annotated[Optional[Attention], typer.Option(help=PARAMS["attention"].help, rich_help_panel=CFG)] = None,
    horizontal_global_attention: Annotated[Optional[bool], typer.Option(help=PARAMS["horizontal_global_attention"].help, rich_help_panel=CFG)] = None,
    num_different_global_patterns: Annotated[Optional[int], typer.Option(help=PARAMS["num_different_global_patterns"].help, rich_help_panel=CFG)] = None,
    num_random_blocks: Annotated[Optional[int], typer.Option(help=PARAMS["num_random_blocks"].help, rich_help_panel=CFG)] = None,
    local_window_blocks: Annotated[Optional[str], typer.Option(help=PARAMS["local_window_blocks"].help + ", e.g. 4,8", rich_help_panel=CFG)] = None,
    global_block_indices: Annotated[Optional[str], typer.Option(help=PARAMS["global_block_indices"].help + ", e.g. 0,8", rich_help_panel=CFG)] = None,
    global_block_end_indices: Annotated[Optional[str], typer.Option(help=PARAMS["global_block_end_indices"].help + ", e.g. 2,10", rich_help_panel=CFG)] = None,
    num_sliding_window_blocks: Annotated[Optional[int], typer.Option(help=PARAMS["num_sliding_window_blocks"].help, rich_help_panel=CFG)] = None,
    plot: Annotated[bool, typer.Option("--plot", help="Write a heatmap PNG.", rich_help_panel=OUT)] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="PNG path for --plot [default: KIND_seqN_bB.png].", rich_help_panel=OUT)] = None,
    head: Annotated[Optional[int], typer.Option(help="Show only this head.", rich_help_panel=OUT)] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Report format.", rich_help_panel=OUT)] = Format.table,
    save: Annotated[Optional[Path], typer.Option(help="Export the layout tensor (.pt or .npy).", rich_help_panel=OUT)] = None,
):
    """Build a block-sparse layout, report its density and cost, and draw it.

    Example: [bold]sparsecli layout bigbird --seq 4096 --plot[/]
    """
    flags = {
        "block": block,
        "different_layout_per_head": different_layout_per_head,
        "num_local_blocks": num_local_blocks,
        "num_global_blocks": num_global_blocks,
        "attention": attention.value if attention is not None else None,
        "horizontal_global_attention": horizontal_global_attention,
        "num_different_global_patterns": num_different_global_patterns,
        "num_random_blocks": num_random_blocks,
        "local_window_blocks": _ints(local_window_blocks, "--local-window-blocks"),
        "global_block_indices": _ints(global_block_indices, "--global-block-indices"),
        "global_block_end_indices": _ints(global_block_end_indices, "--global-block-end-indices"),
        "num_sliding_window_blocks": num_sliding_window_blocks,
    }
    mode, num_heads, values, seq, seed = _resolve(kind, preset, heads, seq, seed)
    for name, value in flags.items():
        if value is None:
            continue
        if name not in KINDS[mode].params:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} does not apply to {mode} layouts (it is used by {', '.join(kinds_using(name))})")
        values[name] = value
    if seq <= 0:
        raise UserError(f"--seq must be a positive number of tokens, got {seq}")

    if head is not None and not 0 <= head < num_heads:
        raise UserError(f"--head must be in 0..{num_heads - 1}, got {head}")
    if output is not None and not plot:
        raise UserError("-o/--output names the PNG written by --plot; add --plot")
    try:
        config = KINDS[mode].build(num_heads, values)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise UserError(str(e)) from None
    path = output or Path(f"{mode}_seq{seq}_b{config.block}.png")
    if plot:
        _check_image_suffix(path)
    _check_fits_in_memory(num_heads, seq, config.block)
    try:
        random.seed(seed)
        lay = config.make_layout(seq)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise UserError(str(e)) from None
    except (RuntimeError, MemoryError) as e:  # e.g. the allocator refusing a huge layout
        raise UserError(f"cannot build the layout: {str(e).splitlines()[0]}") from None

    from ..analysis import analyze, distinct_heads

    all_groups = distinct_heads(lay)
    report = analyze(lay, config.block, mode, getattr(config, "attention", None),
                     unidirectional=config.unidirectional, groups=all_groups)
    groups = [(head, [head])] if head is not None else all_groups
    written = {}
    if save is not None:
        written["layout"] = str(_save(lay, save))
    if plot:
        title = f"{mode} · seq {seq} · block {config.block} · density {report.density:.2%}"
        written["plot"] = str(_write(path, lambda p: _plot(lay, groups, title, p)))

    if fmt is Format.json:
        doc = {"config": {"mode": mode, **config.to_dict()}, "seed": seed, "report": report.to_dict(), "files": written}
        out_console.print_json(json.dumps(doc))
    else:
        out_console.print(report_table(report, config))
        out_console.print(layout_preview(lay[groups[0][0]], f"head {groups[0][0]}"))
        for what, path in written.items():
            err_console.print(f"wrote {what}: [bold]{path}[/]")


def _resolve(kind, preset, heads, seq, seed):
    """(mode, num_heads, explicit values, seq, seed) from the KIND argument or a preset."""
    if preset is not None:
        from ..preset_loader import load_preset

        p = load_preset(preset)
        if kind is not None and kind.value != p.sparsity.mode:
            raise UserError(f"KIND {kind.value} contradicts the preset's mode {p.sparsity.mode}; drop one")
        return (p.sparsity.mode, p.sparsity.num_heads if heads is None else heads, dict(p.sparsity.values),
                p.seq_len if seq is None else seq, (p.seed or 0) if seed is None else seed)
    if kind is None:
        raise UserError("give a layout KIND (" + ", ".join(KINDS) + ") or --preset NAME")
    return kind.value, 16 if heads is None else heads, {}, 4096 if seq is None else seq, 0 if seed is None else seed


def _check_image_suffix(path: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in kinds:
        raise UserError(f"cannot write a plot to {path}: use one of {', '.join('.' + k for k in sorted(kinds))}")


def _check_fits_in_memory(num_heads: int, seq: int, block: int) -> None:
    """Refuse up front what would exhaust memory: the int64 layout plus its bool copy in the report."""
    if block <= 0 or seq % block:
        return  # make_layout explains these
    need = num_heads * (seq // block) ** 2 * 9
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.8 * have:
        raise UserError(f"a {num_heads}-head layout of {seq // block} blocks a side needs {need / 2**30:.1f} GiB "
                        f"(this machine has {have / 2**30:.1f}); use a larger --block, fewer --heads or a shorter --seq")


def _write(path: Path, writer) -> Path:
    try:
        if path.parent and not path.parent.exists():
            raise OSError(f"directory {path.parent} does not exist")
        writer(path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def _save(lay, path: Path) -> Path:
    suffix = path.suffix.lower()
    if suffix == ".pt":
        import torch

        return _write(path, lambda p: torch.save(lay, p))
    if suffix == ".npy":
        import numpy as np

        return _write(path, lambda p: np.save(p, lay.numpy()))
    raise UserError(f"--save takes a .pt or .npy path, got {path}")


def _plot(lay, groups, title, path):
    from ..plot import layout_heatmap

    layout_heatmap(lay, groups, title, path)
