"""Composite: the union or intersection of several layouts of the same heads and block."""
from __future__ import annotations

from .base import SparsityConfig

OPS = ("union", "intersection")


class CompositeSparsityConfig(SparsityConfig):
    """``union`` keeps a block any part has, ``intersection`` a block every part has (e.g.
    streaming ∪ BigBird's random blocks). Parts are built in order, so their random draws follow
    one ``random.seed`` as they would in separate calls.
    """

    per_head_argument = False

    def __init__(self, parts, op="union"):
        parts = list(parts)
        if op not in OPS:
            raise ValueError(f"op must be 'union' or 'intersection', got {op!r}")
        if len(parts) < 2:
            raise ValueError(f"a {op} needs at least two parts, got {len(parts)}")
        for p in parts:
            if not isinstance(p, SparsityConfig):
                raise ValueError(f"every part must be a SparsityConfig, got {type(p).__name__}")
        for attr in ("num_heads", "block"):
            values = [getattr(p, attr) for p in parts]
            if len(set(values)) > 1:
                raise ValueError(f"the parts of a {op} must share {attr}; got {', '.join(map(str, values))}")
        super().__init__(parts[0].num_heads, parts[0].block,
                         any(getattr(p, "different_layout_per_head", False) for p in parts))
        self.op = op
        self.parts = parts

    @property
    def kind(self) -> str:
        return self.op

    @property
    def label(self) -> str:
        return f"{self.op}({', '.join(p.label for p in self.parts)})"

    @property
    def unidirectional(self) -> bool:
        # Causal only if no part can see the future: every part (union) or any part (intersection).
        flags = [p.unidirectional for p in self.parts]
        return all(flags) if self.op == "union" else any(flags)

    def make_layout(self, seq_len):
        layout = self.parts[0].make_layout(seq_len)
        for p in self.parts[1:]:
            if self.op == "union":
                layout |= p.make_layout(seq_len)
            else:
                layout &= p.make_layout(seq_len)
        return layout

    def to_dict(self) -> dict:
        return {"op": self.op, "parts": [{"mode": p.kind, **p.to_dict()} for p in self.parts]}

    def layout_notes(self, seq_len) -> list[str]:
        return [f"{p.label}: {note}" for p in self.parts for note in p.layout_notes(seq_len)]

    def report_figures(self, seq_len) -> dict:
        figures = {}
        for p in reversed(self.parts):  # the first part that has a figure names it
            figures.update(p.report_figures(seq_len))
        return figures
