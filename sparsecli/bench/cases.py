"""The sweep: presets x overrides -> benchmark cases with stable ids, and each case's layout figures.

A *case* is one shape (preset, pass, dtype, seq, batch, heads, head dim, causal) on one provider.
Its ``case_id`` is the baseline key, so it is built only from what the user chose, in a fixed
order, and never from anything measured.
"""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field, replace

from ..plumbing.errors import UserError
from ..kernels.limits import HEAD_DIM_RULE, takes_head_dim
from ..layouts.presets import DTYPES, PASSES, PROVIDERS, Preset

# Providers that compute the preset's block-sparse function; the others run full dense attention.
SPARSE_SEMANTICS = ("sparse", "sparse-nondet", "three-op", "sdpa-masked", "flex", "flex-flash", "fa4-sparse",
                    "fa4-sparse-det", "naive")
FLASH, FLEX = "sdpa-flash", "flex"
# What the peers are, for legends and captions: `flex` stays FlexAttention's Triton backend.
PROVIDER_NOTES = {
    "flex": "FlexAttention, Triton backend",
    "flex-flash": "FlexAttention, FLASH backend (FlashAttention-4 kernels)",
    "fa4": "FlashAttention-4, dense",
    "sparse-nondet": "fused kernel, deterministic=False (the Hopper kernels reduce-add dQ)",
    "fa4-sparse": "FlashAttention-4 called directly, layout as full blocks",
    "fa4-sparse-det": "FlashAttention-4 called directly, layout as full blocks, deterministic backward",
}
BWD_FLOP_FACTOR = 2.5  # backward = 2.5x forward (two recomputed products + three gradients)


@dataclass(frozen=True)
class Shape:
    """Everything that fixes the inputs; providers of one shape share q, k, v and dout."""

    preset: str
    seq_len: int
    batch: int
    heads: int
    head_dim: int
    dtype: str
    causal: bool

    @property
    def key(self) -> str:
        causal = "-causal" if self.causal else ""
        return f"S{self.seq_len}-B{self.batch}-H{self.heads}-D{self.head_dim}-{self.dtype}{causal}"


@dataclass(frozen=True)
class Case:
    shape: Shape
    pass_: str
    provider: str

    @property
    def group_id(self) -> str:
        """The case without its provider: rows of one group are timed on the same inputs."""
        return f"{self.shape.preset}/{self.pass_}/{self.shape.key}"

    @property
    def case_id(self) -> str:
        return f"{self.group_id}/{self.provider}"

    @property
    def sparse(self) -> bool:
        return self.provider in SPARSE_SEMANTICS


@dataclass
class Overrides:
    """Command-line values that replace the preset's ``bench:`` entries (None = keep)."""

    seq_lens: tuple | None = None
    dtypes: tuple | None = None
    passes: tuple | None = None
    providers: tuple | None = None
    batch: int | None = None
    head_dims: tuple | None = None


@dataclass
class Plan:
    presets: list  # [Preset]
    cases: list = field(default_factory=list)  # [Case], grouped by shape then pass


def check_choices(values, allowed, flag) -> tuple:
    """Validate a comma-separated option's items; a typo gets a suggestion."""
    import difflib

    bad = [v for v in values if v not in allowed]
    if bad:
        close = difflib.get_close_matches(str(bad[0]), [str(a) for a in allowed], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"{flag}: unknown value {bad[0]!r}{hint}; use one of {', '.join(map(str, allowed))}")
    if not values:
        raise UserError(f"{flag} must not be empty")
    check_no_repeats(values, flag)
    return tuple(values)


def check_no_repeats(values, flag) -> None:
    twice = next((v for i, v in enumerate(values) if v in values[:i]), None)
    if twice is not None:
        raise UserError(f"{flag} lists {twice} twice; give each value once")


def validate_overrides(o: Overrides) -> Overrides:
    def ints(vals, flag, allowed=None):
        if vals is None:
            return None
        if not vals:
            raise UserError(f"{flag} must not be empty")
        if any(v <= 0 for v in vals):
            raise UserError(f"{flag} takes positive integers, got {','.join(map(str, vals))}")
        if allowed:
            return check_choices(vals, allowed, flag)
        check_no_repeats(vals, flag)
        return tuple(vals)

    return Overrides(
        seq_lens=ints(o.seq_lens, "--seq"),
        dtypes=None if o.dtypes is None else check_choices(o.dtypes, DTYPES, "--dtype"),
        passes=None if o.passes is None else check_choices(o.passes, PASSES, "--pass"),
        providers=None if o.providers is None else check_choices(o.providers, PROVIDERS, "--providers"),
        batch=None if o.batch is None else ints((o.batch,), "--batch")[0],
        head_dims=_head_dims(ints(o.head_dims, "--head-dim")),
    )


def _head_dims(values):
    for d in values or ():
        if not takes_head_dim(d):
            raise UserError(f"--head-dim {d}: the kernels take head dims that are {HEAD_DIM_RULE}")
    return values


def expand(presets: list[Preset], overrides: Overrides | None = None) -> Plan:
    """Every (shape, pass, provider) of the presets' sweeps, with the overrides applied."""
    o = validate_overrides(overrides or Overrides())
    plan = Plan(list(presets))
    for p in presets:
        b = p.bench
        block = p.sparsity.block
        seqs = o.seq_lens or b.seq_lens
        for s in seqs:
            if s % block:
                raise UserError(f"--seq {s} is not a multiple of {p.name}'s block size {block}")
        for seq in seqs:
            batch = o.batch or b.batch_for(seq)
            for dtype in o.dtypes or b.dtypes:
                for head_dim in o.head_dims or b.head_dims:
                    shape = Shape(p.name, seq, batch, p.sparsity.num_heads, head_dim, dtype, b.causal)
                    for pass_ in o.passes or b.passes:
                        for provider in o.providers or b.providers:
                            plan.cases.append(Case(shape, pass_, provider))
    _check_unique(plan)
    return plan


def _check_unique(plan: Plan) -> None:
    """Case ids are baseline keys: a repeated one would make two rows claim the same entry."""
    names = [p.name for p in plan.presets]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        paths = sorted({str(p.path) for p in plan.presets if p.name == twice})
        if len(paths) == 1:
            raise UserError(f"--preset {twice} is given twice; give it once")
        raise UserError(f"two presets are named {twice} ({', '.join(paths)}) and would share case ids; "
                        "rename one file")
    seen = set()
    for c in plan.cases:
        if c.case_id in seen:
            raise UserError(f"{c.shape.preset}: its bench sweep lists case {c.case_id} twice; "
                            "remove the repeated value from the preset's bench: section")
        seen.add(c.case_id)


def shapes(plan: Plan) -> list[Shape]:
    return list(dict.fromkeys(c.shape for c in plan.cases))


# -- the layout of a shape and the figures derived from it ------------------------------------

def preset_of(plan: Plan, shape: Shape) -> Preset:
    return next(p for p in plan.presets if p.name == shape.preset)


def build_layout(preset: Preset, seq_len: int):
    """The preset's (H, nb, nb) layout at ``seq_len``; random kinds are seeded as ``layout`` does."""
    config = preset.sparsity.build()
    random.seed(preset.seed or 0)
    return config.make_layout(seq_len)


def layout_fingerprint(preset: Preset) -> str:
    """Short hash of what builds the layout: a baseline entry is void if it changes."""
    doc = {"mode": preset.sparsity.mode, "heads": preset.sparsity.num_heads,
           "values": preset.sparsity.values, "seed": preset.seed}
    return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LayoutFigures:
    block: int
    nnz_blocks: int  # over all heads
    density: float
    pairs: int  # attended (query, key) pairs over all heads, causal diagonal counted exactly


def layout_figures(layout, block: int, causal: bool) -> LayoutFigures:
    import torch

    # count_nonzero (a bool tensor's .sum() would copy it to int64) and one head at a time: the
    # temporaries stay within layout_memory's per-head allowance.
    H, nb, _ = layout.shape
    nnz = int(torch.count_nonzero(layout))
    pairs = nnz * block * block
    if causal:
        upper = sum(int(torch.count_nonzero(torch.triu(head != 0, diagonal=1))) for head in layout)
        diag = int(torch.count_nonzero(torch.diagonal(layout, dim1=1, dim2=2)))
        pairs -= upper * block * block + diag * block * (block - 1) // 2
    return LayoutFigures(block, nnz, nnz / (H * nb * nb), pairs)


def check_layouts_fit(plan: Plan, seq_overridden: bool) -> None:
    """Refuse up front a sweep whose layouts cannot be built in this machine's memory (a long
    --seq asks for terabytes; the allocator would fail deep in make_layout, or the OOM killer
    end the process). Shapes are built one at a time: the largest one must fit."""
    from ..layouts.memory import FIT_FRACTION, available_bytes, layout_peak_bytes

    have = available_bytes()
    if have is None:
        return
    for shape in shapes(plan):
        block = preset_of(plan, shape).sparsity.block
        need = layout_peak_bytes(shape.heads, shape.seq_len, block)
        if need > FIT_FRACTION * have:
            nb = shape.seq_len // block
            what = f"--seq {shape.seq_len}" if seq_overridden else f"{shape.preset}: seq_len {shape.seq_len}"
            raise UserError(
                f"{what}: the {shape.preset} layout ({shape.heads} heads x {nb:,}x{nb:,} blocks of {block}) "
                f"needs about {need / 2**30:,.1f} GiB to build and {have / 2**30:,.1f} GiB is available; "
                "use a shorter --seq or a preset with a larger block")


def flops(case: Case, figures: LayoutFigures) -> tuple[float, float]:
    """(FLOPs on non-zero blocks, dense-equivalent FLOPs) of one call: 4*B*pairs*D forward."""
    s = case.shape
    dense_pairs = s.heads * s.seq_len * s.seq_len
    if s.causal:
        dense_pairs = s.heads * s.seq_len * (s.seq_len + 1) // 2
    factor = {"fwd": 1.0, "bwd": BWD_FLOP_FACTOR, "fwd+bwd": 1.0 + BWD_FLOP_FACTOR}[case.pass_]
    return (4.0 * s.batch * figures.pairs * s.head_dim * factor,
            4.0 * s.batch * dense_pairs * s.head_dim * factor)


def with_provider(case: Case, provider: str) -> Case:
    return replace(case, provider=provider)
