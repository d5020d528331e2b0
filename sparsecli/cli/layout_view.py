"""What ``sparsecli layout`` prints besides the figures table: the configuration it built (every
parameter and where its value came from), and for ``--vs`` the two reports side by side with a
count of the blocks one has and the other lacks."""
from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .layout_sources import DEFAULT, Side
from .render import report_table

SOURCE_STYLE = {"flag": "bold", "preset": "", "as A": "dim"}


def config_rows(side: Side) -> list[tuple[str, str, str]]:
    """(parameter, value, where the value came from) for every parameter that made the layout:
    the report's configuration table and ``--format json``'s ``sources`` both read these."""
    if side.file is not None:
        return [("file", str(side.file), ""), ("block", str(side.block), side.sources.get("block", "")),
                ("attention", str(side.attention), side.sources.get("attention", ""))]
    config = side.config
    rows = [("preset", side.preset_name, "")] if side.preset_name else []
    rows.append(("num_heads", str(config.num_heads), side.sources.get("num_heads", DEFAULT)))
    parts = getattr(config, "parts", None)
    if parts is not None:
        rows.append(("block", str(config.block), side.sources.get("block", "preset")))
        for i, part in enumerate(parts):
            values = {k: v for k, v in part.to_dict().items() if k not in ("num_heads", "block")}
            rows.append((f"{config.op} part {i + 1}",
                         f"{part.label}: " + ", ".join(f"{k}={_value(v)}" for k, v in values.items()), "preset"))
    else:
        rows += [(name, _value(value), side.sources.get(name, DEFAULT))
                 for name, value in config.to_dict().items() if name != "num_heads"]
    rows.append(("seed", str(side.seed), side.sources.get("seed", DEFAULT)))
    return rows


def sources(side: Side) -> dict:
    """Where each parameter's value came from, as the configuration table shows it."""
    return {name: source for name, _, source in config_rows(side) if source}


def config_table(side: Side) -> Table:
    t = Table(title="configuration", show_header=False, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold", no_wrap=True)  # parameter names are identifiers: never cut ...
    t.add_column(overflow="fold")  # ... and a narrow value folds rather than ends in "…"
    t.add_column(style="dim")
    for row in config_rows(side):
        t.add_row(*row)
    return t


def _value(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


def one_report(side: Side, report) -> Group:
    return Group(report_table(report, side.config), Text(""), config_table(side))


def side_by_side(a: Side, ra, b: Side, rb, diff: dict) -> Group:
    grid = Table.grid(padding=(0, 4))
    grid.add_column(vertical="top")
    grid.add_column(vertical="top")
    grid.add_row(Text(f"A: {a.label}", style="bold cyan"), Text(f"B: {b.label}", style="bold cyan"))
    grid.add_row(one_report(a, ra), one_report(b, rb))
    return Group(grid, Text(""), difference_table(a, b, diff))


def difference_table(a: Side, b: Side, diff: dict) -> Table:
    t = Table(title="difference (all heads)", show_header=False, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column(justify="right")
    t.add_column(style="dim")
    total = max(1, diff["total"])
    t.add_row(f"only in A ({a.label})", f"{diff['only_a']:,}", f"{diff['only_a'] / total:.3%} of all blocks")
    t.add_row(f"only in B ({b.label})", f"{diff['only_b']:,}", f"{diff['only_b'] / total:.3%} of all blocks")
    t.add_row("in both", f"{diff['both']:,}", f"{diff['both'] / total:.3%} of all blocks")
    same = "identical" if diff["only_a"] == diff["only_b"] == 0 else f"{diff['heads_differing']} of {diff['heads']} heads differ"
    t.add_row("heads", same, "")
    return t


def difference(a, b) -> dict:
    """Block counts of what one layout has and the other lacks, one head at a time (no full copies)."""
    only_a = only_b = both = differing = 0
    for h in range(a.shape[0]):
        x, y = a[h].numpy() != 0, b[h].numpy() != 0
        oa, ob = int((x & ~y).sum()), int((y & ~x).sum())
        only_a, only_b, both = only_a + oa, only_b + ob, both + int((x & y).sum())
        differing += bool(oa or ob)
    return {"only_a": only_a, "only_b": only_b, "both": both, "heads_differing": differing,
            "heads": a.shape[0], "total": a.shape[0] * a.shape[1] * a.shape[2]}
