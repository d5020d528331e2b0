"""``sparsecli layout ... --cp N``: the designer's view of a context-parallel split of the layout.

For the chosen strategy, per rank: the blocks it holds, its share of the work, and the K/V
blocks and MiB it receives per layer (one sequence, bf16), forward and backward; then one line
per strategy (imbalance, largest receive) to compare the three at a glance. ``--format json``
carries the same under ``context_parallel``; ``--plot`` adds a panel colouring every block by
the rank that computes it. Plans come from ``sparsecli.distributed.plan_context_parallel``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ..plumbing.errors import UserError

MIB = 2 ** 20
PANEL = "Context parallelism"
DTYPE = "bfloat16"


class CpStrategy(str, Enum):
    balanced = "balanced"
    contiguous = "contiguous"
    zigzag = "zigzag"


@dataclass
class CpView:
    """One side's split: the chosen strategy's plan and the report section."""
    plan: object
    doc: dict


@dataclass(frozen=True)
class CpRequest:
    world_size: int
    strategy: str
    head_dim: int
    kv_heads: int | None  # None: one K/V head per query head

    @classmethod
    def from_options(cls, cp, strategy, head_dim, kv_heads) -> "CpRequest | None":
        """The request, or None without ``--cp``; the other flags alone are an error."""
        if cp is None:
            given = [f for f, v in (("--cp-strategy", strategy), ("--head-dim", head_dim), ("--kv-heads", kv_heads))
                     if v is not None]
            if given:
                raise UserError(f"{', '.join(given)} describe{'s' if len(given) == 1 else ''} a context-parallel "
                                "split; add --cp N (the number of ranks)")
            return None
        for flag, value in (("--cp", cp), ("--head-dim", head_dim), ("--kv-heads", kv_heads)):
            if value is not None and value < 1:
                raise UserError(f"{flag} must be at least 1, got {value}")
        return cls(cp, (strategy or CpStrategy.balanced).value, 128 if head_dim is None else head_dim, kv_heads)

    def evaluate(self, side) -> CpView:
        """Plan ``side``'s layout with every strategy and report the chosen one per rank."""
        import torch

        from ..distributed import STRATEGIES, plan_context_parallel

        heads = side.layout.shape[0]
        kv = heads if self.kv_heads is None else self.kv_heads
        if heads % kv:
            raise UserError(f"--kv-heads {kv} must divide the layout's {heads} heads (each K/V head serves a group "
                            "of query heads)")
        causal = bool(side.config is not None and side.config.unidirectional)
        dtype = getattr(torch, DTYPE)
        plans = {s: plan_context_parallel(side.layout, side.block, self.world_size, causal=causal, strategy=s)
                 for s in STRATEGIES}
        stats = {s: p.stats(head_dim=self.head_dim, kv_heads=kv, dtype=dtype, q_heads=heads) for s, p in plans.items()}
        chosen, st = plans[self.strategy], stats[self.strategy]
        ranks = [{"rank": r, "blocks": st["blocks"][r], "block_runs": _runs(chosen.blocks(r).tolist()),
                  "work_share": st["work_share"][r], "fetched_blocks": st["fetched_blocks"][r],
                  "spread_rows": st["spread_rows"][r], "borrowed_rows": st["borrowed_rows"][r],
                  "recv_mib_forward": st["bytes_forward"][r] / MIB, "recv_mib_backward": st["bytes_backward"][r] / MIB}
                 for r in range(self.world_size)]
        compare = [{"strategy": s, "imbalance": x["imbalance"], "max_recv_mib_forward": max(x["bytes_forward"]) / MIB,
                    "max_recv_mib_backward": max(x["bytes_backward"]) / MIB, "spread_rows": sum(x["spread_rows"])}
                   for s, x in stats.items()]
        doc = {"world_size": self.world_size, "strategy": self.strategy, "causal": causal, "q_heads": heads,
               "kv_heads": kv, "head_dim": self.head_dim, "dtype": DTYPE, "per": "layer, one sequence",
               "ring_mib": st["ring_bytes"] / MIB, "ranks": ranks, "strategies": compare}
        return CpView(chosen, doc)


def _runs(blocks: list[int]) -> str:
    """'0-127' or '0-63, 960-1023': a rank's blocks as runs."""
    if not blocks:
        return "none"
    runs, start = [], blocks[0]
    for a, b in zip(blocks, blocks[1:] + [None]):
        if b != a + 1:
            runs.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(runs) if len(runs) <= 4 else ", ".join(runs[:3]) + f", ... ({len(runs)} runs)"


def cp_table(doc: dict, label: str = ""):
    """The report section: per rank, then one line per strategy."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    title = (f"{label}context parallelism: {doc['world_size']} ranks, {doc['strategy']}"
             f"{', causal' if doc['causal'] else ''} · K/V {doc['kv_heads']} heads x {doc['head_dim']}, Q "
             f"{doc['q_heads']} heads, {doc['dtype']} · received per {doc['per']}")
    t = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for name in ("rank", "blocks", "held", "work share", "K/V blocks in", "MiB in fwd", "MiB in bwd"):
        t.add_column(name, justify="left" if name == "held" else "right")
    spread = any(r["spread_rows"] or r["borrowed_rows"] for r in doc["ranks"])
    if spread:
        t.add_column("spread rows / borrowed", justify="right")
    for r in doc["ranks"]:
        row = [str(r["rank"]), f"{r['blocks']:,}", r["block_runs"], f"{r['work_share']:.2%}",
               f"{r['fetched_blocks']:,}", f"{r['recv_mib_forward']:,.1f}", f"{r['recv_mib_backward']:,.1f}"]
        if spread:
            row.append(f"{r['spread_rows']} / {r['borrowed_rows']}")
        t.add_row(*row)
    s = Table(title=f"strategies (a dense ring receives {doc['ring_mib']:,.1f} MiB per rank each way)",
              title_justify="left", box=None, pad_edge=False)
    for name in ("strategy", "imbalance", "largest receive fwd MiB", "bwd MiB", "vs ring", "spread rows"):
        s.add_column(name, justify="left" if name == "strategy" else "right")
    for x in doc["strategies"]:
        vs = max(x["max_recv_mib_forward"], x["max_recv_mib_backward"]) / doc["ring_mib"] if doc["ring_mib"] else 0.0
        s.add_row(x["strategy"] + (" *" if x["strategy"] == doc["strategy"] else ""), f"{x['imbalance']:.3f}",
                  f"{x['max_recv_mib_forward']:,.1f}", f"{x['max_recv_mib_backward']:,.1f}", f"{vs:.1%}",
                  str(x["spread_rows"]))
    return Group(t, Text(""), s)


def cp_panel(view: CpView, label: str = ""):
    """The ``--plot`` panel: ``(title, draw(ax))``."""
    from ..distributed.plot import rank_panel

    return rank_panel(view.plan, label)
