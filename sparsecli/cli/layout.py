"""``sparsecli layout``: build a layout from a kind, a preset or a file, report it, draw it, export
it; with ``--vs``, compare two layouts."""

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from ..plumbing.errors import UserError
from ..layouts.registry import BOOL, INT, INT_LIST, KINDS, OPT_INT_LIST, PARAMS, STR, defaults_text
from .app import Command, app
from .console import err_console, out_console
from .layout_cp import PANEL as CP, CpRequest, CpStrategy, cp_panel, cp_table
from .layout_view import sources
from .path_params import path
from .layout_sources import (AS_A, DEFAULT_HEADS, DEFAULT_SEQ, build, check_unused, plan_file, plan_kind, plan_preset,
                             plan_vs)

Mode = Enum("Mode", {m: m for m in KINDS}, type=str)
Attention = Enum("Attention", {a: a for a in PARAMS["attention"].choices}, type=str)
SAVE_SUFFIXES = (".pt", ".npy", ".npz")


class Format(str, Enum):
    table = "table"
    json = "json"


def _ints(text: str | None, flag: str) -> list[int] | None:
    """A comma-separated list of integers; an empty entry (``4,,8``) is an error, not dropped."""
    if text is None:
        return None
    items = text.replace(" ", "").split(",")
    if "" in items:
        raise UserError(f"{flag} {text!r} has an empty entry; give comma-separated integers, e.g. 0,4")
    try:
        return [int(x) for x in items]
    except ValueError:
        raise UserError(f"{flag} takes comma-separated integers, e.g. 0,4 — got {text!r}") from None


IN = "Input"
CFG = "Layout parameters (DeepSpeed's arguments, and those of the newer kinds)"
SWITCHES = "Layout switches (DeepSpeed's booleans)"
OUT = "Output"


# Short metavars, as in the README's usage lines (--seq N --block B): the help's options table
# must show every flag name whole in 80 columns, and a type column as wide as <unidirectional|
# bidirectional> leaves the names too little room.
METAVARS = {INT: "N", INT_LIST: "LIST", OPT_INT_LIST: "LIST", STR: "MODE", BOOL: ""}


def _cfg(name: str, *names: str, example: str = "", default: str | None = None, metavar: str | None = None,
         panel: str = CFG):
    return typer.Option(*names, help=PARAMS[name].help + example, show_default=default or defaults_text(name),
                        metavar=METAVARS[PARAMS[name].type] if metavar is None else metavar, rich_help_panel=panel)


# A switch's --no- form is hidden and named in its help instead: Typer gives --x/--no-x a column
# each, and two such names do not fit beside a help text in 80 columns. The switches have a panel
# of their own, whose shorter names leave the help column room for the whole --no- name.
def _switch(name: str):
    return _cfg(name, PARAMS[name].flag, example=f"; off: --no-{PARAMS[name].flag[2:]}", panel=SWITCHES)


def _switch_off(name: str):
    return typer.Option(f"--no-{PARAMS[name].flag[2:]}", hidden=True)


def _switched(on: bool | None, off: bool, name: str) -> bool | None:
    if on and off:
        flag = PARAMS[name].flag
        raise typer.BadParameter(f"give {flag} or --no-{flag[2:]}, not both", param_hint=f"'{flag}'")
    return False if off else on


@app.command(cls=Command, no_args_is_help=True)
def layout(
    kind: Annotated[Optional[Mode], typer.Argument(metavar="KIND", help=f"Layout kind: {', '.join(KINDS)} (or give --preset or --from).", show_default=False)] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", "-p", metavar="NAME", help="Bundled preset name or YAML path.", show_default="none: give a KIND", rich_help_panel=IN)] = None,
    from_file: Annotated[Optional[Path], typer.Option("--from", parser=path, metavar="FILE", help="Read the layout (and the attention mode it was saved with) from a .pt/.npy/.npz file of 0/1, (H, nb, nb) or (nb, nb); needs --block.", show_default="none", rich_help_panel=IN)] = None,
    vs: Annotated[Optional[str], typer.Option("--vs", metavar="B", help="Compare with B: a KIND (A's seq, heads and block), a preset (NAME.yaml or a path) or a layout file.", show_default="no comparison", rich_help_panel=IN)] = None,
    seq: Annotated[Optional[int], typer.Option("--seq", "-s", metavar="N", help="Sequence length in tokens.", show_default=f"the preset's, else {DEFAULT_SEQ}", rich_help_panel=IN)] = None,
    heads: Annotated[Optional[int], typer.Option("--heads", "-H", metavar="H", help="Attention heads (num_heads).", show_default=f"the preset's, else {DEFAULT_HEADS}", rich_help_panel=IN)] = None,
    seed: Annotated[Optional[int], typer.Option(metavar="S", help="random.seed() before make_layout, for the random kinds.", show_default="the preset's seed, else 0", rich_help_panel=IN)] = None,
    block: Annotated[Optional[int], _cfg("block", default="the preset's, else 16", metavar="B")] = None,
    different_layout_per_head: Annotated[Optional[bool], _switch("different_layout_per_head")] = None,
    num_local_blocks: Annotated[Optional[int], _cfg("num_local_blocks")] = None,
    num_global_blocks: Annotated[Optional[int], _cfg("num_global_blocks")] = None,
    attention: Annotated[Optional[Attention], _cfg("attention")] = None,
    horizontal_global_attention: Annotated[Optional[bool], _switch("horizontal_global_attention")] = None,
    num_different_global_patterns: Annotated[Optional[int], _cfg("num_different_global_patterns")] = None,
    num_random_blocks: Annotated[Optional[int], _cfg("num_random_blocks")] = None,
    local_window_blocks: Annotated[Optional[str], _cfg("local_window_blocks", example=", e.g. 4,8")] = None,
    global_block_indices: Annotated[Optional[str], _cfg("global_block_indices", example=", e.g. 0,8")] = None,
    global_block_end_indices: Annotated[Optional[str], _cfg("global_block_end_indices", example=", e.g. 2,10")] = None,
    num_sliding_window_blocks: Annotated[Optional[int], _cfg("num_sliding_window_blocks")] = None,
    num_window_blocks: Annotated[Optional[int], _cfg("num_window_blocks")] = None,
    num_sink_blocks: Annotated[Optional[int], _cfg("num_sink_blocks")] = None,
    stride: Annotated[Optional[int], _cfg("stride")] = None,
    document_lengths: Annotated[Optional[str], _cfg("document_lengths", example=", e.g. 1000,3096")] = None,
    plot: Annotated[bool, typer.Option("--plot", metavar="", help="Write a heatmap PNG (with --vs: of the difference).", show_default="off", rich_help_panel=OUT)] = False,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", parser=path, metavar="PNG", help="Path for --plot (a preset's PNG is named after the preset).", show_default="KIND_seqN_bB.png", rich_help_panel=OUT)] = None,
    title: Annotated[Optional[str], typer.Option(metavar="TEXT", help="Heatmap title.", show_default="KIND · seq · block · density", rich_help_panel=OUT)] = None,
    head: Annotated[Optional[int], typer.Option(metavar="I", help="Show only this head.", show_default="every distinct head layout", rich_help_panel=OUT)] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="Report format.", rich_help_panel=OUT)] = Format.table,
    save: Annotated[Optional[Path], typer.Option(parser=path, metavar="FILE", help="Export the layout with its attention mode (.pt, .npz, or .npy with a .npy.json beside it).", show_default="no export", rich_help_panel=OUT)] = None,
    cp: Annotated[Optional[int], typer.Option("--cp", metavar="N", help="Split the sequence over N ranks (context parallelism): each rank's blocks, work and K/V received.", show_default="no split", rich_help_panel=CP)] = None,
    cp_strategy: Annotated[Optional[CpStrategy], typer.Option("--cp-strategy", metavar="HOW", help="How --cp splits the blocks: balanced, contiguous or zigzag.", show_default="balanced", rich_help_panel=CP)] = None,
    head_dim: Annotated[Optional[int], typer.Option("--head-dim", metavar="D", help="Head dim of the K/V that --cp counts.", show_default="128", rich_help_panel=CP)] = None,
    kv_heads: Annotated[Optional[int], typer.Option("--kv-heads", metavar="H", help="K/V heads that --cp counts (GQA: fewer than the layout's heads).", show_default="one per layout head", rich_help_panel=CP)] = None,
    no_different_layout_per_head: Annotated[bool, _switch_off("different_layout_per_head")] = False,
    no_horizontal_global_attention: Annotated[bool, _switch_off("horizontal_global_attention")] = False,
):
    """Build a block-sparse layout, report its density and cost, and draw it.

    Example: [bold]sparsecli layout bigbird --seq 4096 --plot[/]
    """
    given = {
        "block": block,
        "different_layout_per_head": _switched(different_layout_per_head, no_different_layout_per_head,
                                               "different_layout_per_head"),
        "num_local_blocks": num_local_blocks,
        "num_global_blocks": num_global_blocks,
        "attention": attention.value if attention is not None else None,
        "horizontal_global_attention": _switched(horizontal_global_attention, no_horizontal_global_attention,
                                                 "horizontal_global_attention"),
        "num_different_global_patterns": num_different_global_patterns,
        "num_random_blocks": num_random_blocks,
        "local_window_blocks": _ints(local_window_blocks, "--local-window-blocks"),
        "global_block_indices": _ints(global_block_indices, "--global-block-indices"),
        "global_block_end_indices": _ints(global_block_end_indices, "--global-block-end-indices"),
        "num_sliding_window_blocks": num_sliding_window_blocks,
        "num_window_blocks": num_window_blocks,
        "num_sink_blocks": num_sink_blocks,
        "stride": stride,
        "document_lengths": _ints(document_lengths, "--document-lengths"),
    }
    flags = {k: v for k, v in given.items() if v is not None}
    if sum(x is not None for x in (preset, from_file)) + (kind is not None and preset is None) != 1:
        raise UserError("give one layout: a KIND (" + ", ".join(KINDS) + "), --preset NAME or --from FILE")
    if output is not None and not plot:
        raise UserError("-o/--output names the PNG written by --plot; add --plot")
    if title is not None and not plot:
        raise UserError("--title names the heatmap written by --plot; add --plot")
    if save is not None and vs is not None:
        raise UserError("--save exports one layout; drop --vs (or save each side on its own)")
    if save is not None and save.suffix.lower() not in SAVE_SUFFIXES:
        raise UserError(f"--save takes a .pt, .npy or .npz path, got {save}")
    cp_request = CpRequest.from_options(cp, cp_strategy, head_dim, kv_heads)

    if from_file is not None:
        plan_a = plan_file(from_file, heads, seed, flags)
    elif preset is not None:
        plan_a = plan_preset(preset, heads, seq, seed, flags)
        if kind is not None and kind.value != getattr(plan_a.spec, "mode", None):
            raise UserError(f"KIND {kind.value} contradicts the preset's mode {plan_a.spec.mode}; drop one")
    else:
        plan_a = plan_kind(kind.value, heads, seq, seed, flags)
    plan_b = plan_vs(vs, plan_a, heads, seq, seed, flags) if vs is not None else None
    check_unused([p for p in (plan_a, plan_b) if p is not None], flags)
    if plot:
        _check_image_suffix(output or Path("x.png"))
    from ..layouts.files import written_files
    from ..plumbing.output_files import check_no_clobber, check_writable

    for path in written_files(save) if save is not None else ():  # before a long build, not after it
        check_writable(path, "--save")
    check_writable(output, "-o")
    inputs = {"--from": from_file, "--preset": preset if preset and Path(preset).is_file() else None,
              "--vs": vs if vs and Path(vs).is_file() else None}
    check_no_clobber({"--save": save, "-o": output}, inputs)

    a = build(plan_a)
    seq_a = a.layout.shape[-1] * a.block
    if from_file is not None and seq is not None and seq != seq_a:
        raise UserError(f"--seq {seq} does not match {from_file}: {a.layout.shape[-1]} blocks of {a.block} "
                        f"= {seq_a} tokens; drop --seq")
    if head is not None and not 0 <= head < a.layout.shape[0]:
        raise UserError(f"--head must be in 0..{a.layout.shape[0] - 1}, got {head}")
    if plan_b is None:
        _one(a, plot, output, title, head, fmt, save, cp_request)
    else:
        plan_b.seq_len = seq_a  # B is built at A's sequence length ...
        if plan_b.sources.get("num_heads") == AS_A and plan_a.spec is None:
            plan_b.spec = plan_b.spec.override(a.layout.shape[0])  # ... and with the heads of A's file
        b = build(plan_b, layouts_alive=2)
        _versus(a, b, plot, output, title, head, fmt, cp_request)


def _one(a, plot, output, title, head, fmt, save, cp=None):
    from ..analysis.report import distinct_heads
    from .render import layout_preview

    groups = distinct_heads(a.layout)
    report = _report(a, groups)
    shown = [(head, [head])] if head is not None else groups
    seq = report.seq_len
    cp_view = cp.evaluate(a) if cp else None
    written = {}
    if save is not None:
        written["layout"] = str(_save(a, save))
    if plot:
        from ..analysis.plot import layout_heatmap

        path = output or Path(f"{_file_label(a)}_seq{seq}_b{a.block}.png")
        title = title or f"{a.label} · seq {seq} · block {a.block} · density {report.density:.2%}"
        written["plot"] = str(layout_heatmap(a.layout, shown, title, path, [cp_panel(cp_view)] if cp_view else ()))

    if fmt is Format.json:
        doc = {"config": _config_doc(a, report), "seed": a.seed, "sources": sources(a), "report": report.to_dict(),
               "files": written}
        if cp_view:
            doc["context_parallel"] = cp_view.doc
        out_console.print_json(json.dumps(doc))
        return
    from .layout_view import one_report

    out_console.print(one_report(a, report))
    out_console.print(layout_preview(a.layout[shown[0][0]], f"head {shown[0][0]}"))
    if cp_view:
        out_console.print(cp_table(cp_view.doc))
    for what, path in written.items():
        _wrote(what, path)


def _versus(a, b, plot, output, title, head, fmt, cp=None):
    from ..analysis.report import distinct_heads
    from .layout_view import difference, side_by_side

    if a.layout.shape[1:] != b.layout.shape[1:] or a.block != b.block:
        _mismatch(a, b)
    ha, hb = a.layout.shape[0], b.layout.shape[0]
    if ha != hb:
        if 1 not in (ha, hb):
            raise UserError(f"A has {ha} heads and B {hb}: compare layouts of one head count (set --heads)")
        a.layout, b.layout = (a.layout.expand(hb, -1, -1), b.layout) if ha == 1 else (a.layout, b.layout.expand(ha, -1, -1))
    reports, group_of = [], []
    for side in (a, b):
        groups = distinct_heads(side.layout)
        reports.append(_report(side, groups))
        group_of.append({h: first for first, members in groups for h in members})
    diff = difference(a.layout, b.layout)
    cp_views = [cp.evaluate(a), cp.evaluate(b)] if cp else []
    written = {}
    if plot:
        from ..analysis.plot import difference_heatmap

        pairs = {}  # heads whose A layout and B layout are both the same: one panel
        for h in range(a.layout.shape[0]):
            pairs.setdefault((group_of[0][h], group_of[1][h]), []).append(h)
        shown = [(head, [head])] if head is not None else [(members[0], members) for members in pairs.values()]
        seq = reports[0].seq_len
        path = output or Path(f"{_file_label(a)}_vs_{_file_label(b)}_seq{seq}_b{a.block}.png")
        title = title or f"{a.label} (A) vs {b.label} (B) · seq {seq} · block {a.block}"
        extra = [cp_panel(v, f"{side}: ") for side, v in zip("AB", cp_views)]
        written["plot"] = str(difference_heatmap(a.layout, b.layout, shown, ("A", "B"), title, path, extra))
    if fmt is Format.json:
        doc = {side: {"config": _config_doc(s, r), "seed": s.seed, "sources": sources(s), "report": r.to_dict()}
               for side, s, r in (("a", a, reports[0]), ("b", b, reports[1]))}
        for side, v in zip("ab", cp_views):
            doc[side]["context_parallel"] = v.doc
        out_console.print_json(json.dumps({**doc, "difference": diff, "files": written}))
        return
    out_console.print(side_by_side(a, reports[0], b, reports[1], diff))
    for side, v in zip("AB", cp_views):
        out_console.print(cp_table(v.doc, f"{side}: "))
    for what, path in written.items():
        _wrote(what, path)


def _mismatch(a, b) -> None:
    """A and B differ in block or length: name the flag that fixes it. B is built at A's length
    and block, so only a file (which fixes its own length) can differ in length."""
    nb_a, nb_b = a.layout.shape[-1], b.layout.shape[-1]
    seq_a, seq_b = nb_a * a.block, nb_b * b.block
    said = f"A has {nb_a} blocks of {a.block} ({seq_a} tokens), B {nb_b} of {b.block} ({seq_b} tokens)"
    if a.block != b.block:
        fix = "give both one block with --block"
    elif a.file is not None and b.file is not None:
        fix = "compare files of one length"
    elif b.file is not None:
        fix = f"set --seq {seq_b}, the length of {b.file.name}"
    else:
        fix = f"set --seq {seq_a}"
    raise UserError(f"{said}: compare layouts of one sequence length and block; {fix}")


def _report(side, groups):
    from ..analysis.report import analyze, analyze_config

    if side.config is not None:
        return analyze_config(side.config, side.layout, groups)
    return analyze(side.layout, side.block, side.label, side.attention, groups=groups)


def _config_doc(side, report) -> dict:
    return report.config or {"file": str(side.file), "block": side.block, "attention": side.attention}


def _wrote(what: str, path) -> None:
    """One line, never wrapped: a path split mid-name cannot be pasted back."""
    err_console.print(f"wrote {what}: [bold]{escape(str(path))}[/]", highlight=False, soft_wrap=True)


def _file_label(side) -> str:
    """The default PNG's name: the file's or the preset's (two union presets must not share a
    name), else the kind's."""
    if side.file is not None:
        return side.file.stem
    return side.preset_name or getattr(side.config, "kind", side.label)


def _check_image_suffix(path: Path) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    kinds = FigureCanvasBase.get_supported_filetypes()
    if path.suffix.lower().lstrip(".") not in kinds:
        raise UserError(f"cannot write a plot to {path}: use one of {', '.join('.' + k for k in sorted(kinds))}")


def _save(side, path: Path) -> Path:
    """The layout with its attention mode, so that ``--from`` reads back the same report."""
    from ..layouts.files import save_layout

    if side.config is not None:
        attention = "unidirectional" if side.config.unidirectional else "bidirectional"
    else:
        attention = side.attention
    return save_layout(path, side.layout, attention)
