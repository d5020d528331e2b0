"""What builds a layout, before it is built: a kind with its values, or a union/intersection of
such specs. Presets parse into these, the CLI overrides them with its flags, and the bench
fingerprints them; none of it imports torch until ``build()`` makes the layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .registry import KINDS


@dataclass(frozen=True)
class SparsitySpec:
    mode: str
    num_heads: int
    values: dict = field(default_factory=dict)  # the arguments to pass (the class defaults the rest)
    given: frozenset = frozenset()  # the keys a preset file stated (the others are defaults)

    @property
    def block(self) -> int:
        return self.values.get("block", 16)

    def build(self):
        return KINDS[self.mode].build(self.num_heads, self.values)

    def override(self, num_heads: int | None = None, values: dict | None = None) -> SparsitySpec:
        """This spec with ``num_heads`` and some values replaced (the CLI's flags over a preset)."""
        return replace(self, num_heads=self.num_heads if num_heads is None else num_heads,
                       values={**self.values, **(values or {})})


@dataclass(frozen=True)
class CompositeSpec:
    mode: str  # "union" or "intersection"
    num_heads: int
    parts: tuple  # of SparsitySpec / CompositeSpec, sharing num_heads and block

    @property
    def block(self) -> int:
        return self.parts[0].block

    @property
    def values(self) -> dict:
        """Everything that decides the layout, as plain data (JSON, fingerprints)."""
        return {"block": self.block,
                "parts": [{"mode": p.mode, "num_heads": p.num_heads, **p.values} for p in self.parts]}

    def build(self):
        from .composite import CompositeSparsityConfig

        return CompositeSparsityConfig([p.build() for p in self.parts], self.mode)

    def override(self, num_heads: int | None = None, values: dict | None = None) -> CompositeSpec:
        """Only the shared ``num_heads`` and ``block`` can be overridden: they apply to every part."""
        values = dict(values or {})
        block = values.pop("block", None)
        if values:
            names = ", ".join("--" + k.replace("_", "-") for k in values)
            raise ValueError(f"{names}: a {self.mode} takes its parts' parameters from the preset file; "
                             "edit the file (only --heads and --block apply to every part)")
        part_values = {} if block is None else {"block": block}
        return replace(self, num_heads=self.num_heads if num_heads is None else num_heads,
                       parts=tuple(p.override(num_heads, part_values) for p in self.parts))
