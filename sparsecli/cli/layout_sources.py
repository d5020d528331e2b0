"""Where ``sparsecli layout`` gets a layout: a KIND with flags, a preset with overrides, or a
layout file; and the other side of ``--vs``. Each becomes a ``Side``: the layout, its block, the
config that built it and where each parameter's value came from (for the report's echo).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from ..plumbing.errors import UserError
from ..layouts.registry import KINDS, PARAMS, kinds_using
from ..layouts.spec import CompositeSpec, SparsitySpec

DEFAULT_SEQ, DEFAULT_HEADS, DEFAULT_SEED = 4096, 16, 0
FLAG, PRESET, DEFAULT, JSON_DEFAULT, AS_A = "flag", "preset", "class default", "DeepSpeed JSON-parser default", "as A"
FILE, FILE_SILENT = "file", "default (the file does not say)"
FILE_FLAGS = ("block", "attention")  # what describes a layout read from a file


@dataclass
class Plan:
    """A side before its layout is built."""
    label: str
    spec: SparsitySpec | CompositeSpec | None  # None: a file
    seq_len: int | None
    seed: int | None
    sources: dict = field(default_factory=dict)  # parameter -> FLAG / PRESET / ...
    unused: set = field(default_factory=set)  # flags this side does not take
    file: Path | None = None
    file_block: int | None = None
    file_attention: str | None = None  # --attention over what the file records
    preset_name: str | None = None

    @property
    def block(self) -> int:
        return self.file_block if self.spec is None else self.spec.block

    @property
    def num_heads(self) -> int | None:
        return None if self.spec is None else self.spec.num_heads


@dataclass
class Side:
    label: str
    layout: object  # int64 (H, nb, nb) tensor
    block: int
    config: object | None  # the SparsityConfig (None for a file)
    seed: int | None
    sources: dict
    file: Path | None = None
    preset_name: str | None = None
    attention: str | None = None  # a file's attention mode (a config knows its own)


def plan_kind(mode: str, heads: int | None, seq: int | None, seed: int | None, flags: dict) -> Plan:
    kind = KINDS[mode]
    values = {k: v for k, v in flags.items() if k in kind.params}
    sources = {k: FLAG for k in values}
    sources["num_heads"] = FLAG if heads is not None else DEFAULT
    sources["seed"] = FLAG if seed is not None else DEFAULT
    spec = SparsitySpec(mode, DEFAULT_HEADS if heads is None else heads, values)
    return Plan(mode, spec, seq, DEFAULT_SEED if seed is None else seed, sources, set(flags) - set(values))


def plan_preset(ref: str, heads: int | None, seq: int | None, seed: int | None, flags: dict) -> Plan:
    from ..layouts.presets import load_preset

    p = load_preset(ref)
    spec = p.sparsity
    if isinstance(spec, CompositeSpec):
        applicable = dict(flags)  # override() accepts only --block and says to edit the file for the rest
        sources = {}
    else:
        kind = KINDS[spec.mode]
        applicable = {k: v for k, v in flags.items() if k in kind.params}
        sources = {k: PRESET if k in spec.given else (JSON_DEFAULT if kind.json_parser else DEFAULT)
                   for k in spec.values}
    try:
        spec = spec.override(heads, applicable)
    except ValueError as e:
        raise UserError(str(e)) from None
    sources.update({k: FLAG for k in applicable})
    sources["num_heads"] = FLAG if heads is not None else PRESET
    sources["seed"] = FLAG if seed is not None else (PRESET if p.seed is not None else DEFAULT)
    seed = (p.seed or DEFAULT_SEED) if seed is None else seed
    return Plan(spec.mode if isinstance(spec, SparsitySpec) else _composite_label(spec), spec,
                p.seq_len if seq is None else seq, seed, sources, set(flags) - set(applicable), preset_name=p.name)


def plan_file(path: Path, heads: int | None, seed: int | None, flags: dict) -> Plan:
    given = [f"--{k.replace('_', '-')}" for k in flags if k not in FILE_FLAGS]
    if heads is not None:
        given.append("--heads")
    if seed is not None:
        given.append("--seed")
    if given:
        raise UserError(f"{', '.join(given)} cannot change a layout read from a file; drop "
                        f"{'it' if len(given) == 1 else 'them'} (--block, --seq and --attention describe the file)")
    sources = {"block": FLAG}
    if "block" not in flags:
        from ..layouts.files import block_mask_block

        tile = block_mask_block(path)  # a saved FlexAttention BlockMask knows its block
        if tile is None:
            raise UserError(f"--from {path} needs --block B: the file holds blocks, not tokens")
        flags = {**flags, "block": tile}
        sources = {"block": FILE}
    if flags["block"] < 1:
        raise UserError(f"--block must be a positive number of tokens, got {flags['block']}")
    if "attention" in flags:
        sources["attention"] = FLAG
    return Plan(path.name, None, None, None, sources, set(), file=path, file_block=flags["block"],
                file_attention=flags.get("attention"))


def plan_vs(text: str, a: Plan, heads: int | None, seq: int | None, seed: int | None, flags: dict) -> Plan:
    """The other side of ``--vs``: a KIND (taking A's heads and block unless flags say otherwise),
    a preset (a path ending in .yaml/.yml, or a bundled name that is not a kind) or a layout file."""
    from ..layouts.files import SUFFIXES

    if not text:
        raise UserError("--vs is empty; give a KIND, a preset (NAME or a YAML path) or a layout file")
    path = Path(text)
    if path.suffix.lower() in SUFFIXES:
        plan = plan_file(path, None, None, {"block": flags.get("block", a.block),
                                            **{k: v for k, v in flags.items() if k == "attention"}})
        plan.sources["block"] = FLAG if "block" in flags else AS_A
        return plan
    if text in KINDS:  # A's heads, block and seed unless flags say otherwise
        plan = plan_kind(text, a.num_heads if heads is None else heads, seq, a.seed if seed is None else seed,
                         {"block": a.block, **flags})
        for name, given in (("block", "block" in flags), ("num_heads", heads is not None), ("seed", seed is not None)):
            plan.sources[name] = FLAG if given else AS_A
        return plan
    return plan_preset(text, heads, seq, seed, flags)


def _composite_label(spec: CompositeSpec) -> str:
    parts = [p.mode if isinstance(p, SparsitySpec) else _composite_label(p) for p in spec.parts]
    return f"{spec.mode}({', '.join(parts)})"


def check_unused(plans: list[Plan], flags: dict) -> None:
    """A flag no side takes is an error, not silently ignored."""
    unused = set(flags)
    for p in plans:
        unused &= p.unused
    for name in sorted(unused):
        modes = " or ".join(p.label for p in plans)
        raise UserError(f"{PARAMS[name].flag} does not apply to {modes} layouts (it is used by "
                        f"{', '.join(kinds_using(name))})")


def build(plan: Plan, layouts_alive: int = 1) -> Side:
    """Build (or read) the layout of ``plan``; every failure is one line."""
    if plan.file is not None:
        return _read(plan)
    from ..layouts.memory import check_layout_fits

    seq = DEFAULT_SEQ if plan.seq_len is None else plan.seq_len
    if seq <= 0:
        raise UserError(f"--seq must be a positive number of tokens, got {seq}")
    try:
        config = plan.spec.build()
        parts = len(plan.spec.parts) if isinstance(plan.spec, CompositeSpec) else 1
        check_layout_fits(config.num_heads, seq, config.block, layouts_alive + min(parts, 2) - 1)
        random.seed(plan.seed)
        layout = config.make_layout(seq)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise UserError(str(e)) from None
    except (RuntimeError, MemoryError) as e:  # e.g. the allocator refusing a huge layout
        raise UserError(f"cannot build the layout: {str(e).splitlines()[0]}") from None
    return Side(config.label, layout, config.block, config, plan.seed, plan.sources, preset_name=plan.preset_name)


def _read(plan: Plan) -> Side:
    from ..layouts.files import read_layout_file

    try:
        got = read_layout_file(plan.file, plan.block)
    except ValueError as e:
        raise UserError(str(e)) from None
    sources = dict(plan.sources)
    if plan.file_attention is None:
        sources["attention"] = FILE if got.attention is not None else FILE_SILENT
    attention = plan.file_attention or got.attention or "bidirectional"
    return Side(plan.label, got.layout, plan.block, None, None, sources, file=plan.file, attention=attention)
