"""The abstract ``SparsityConfig`` and the building blocks the concrete layouts share.

Layouts must equal DeepSpeed's bit for bit, including the random draws: every setter keeps
DeepSpeed's Python slicing semantics (negative indices wrap) and calls ``random.sample`` on the
global ``random`` module in the same order. Deterministic parts are vectorized per head on a
``(nb, nb)`` bool matrix; the int64 ``(H, nb, nb)`` result is written once at the end.

torch is imported inside the functions that build tensors: constructing a config (which is
where every argument is checked) must stay cheap, because ``sparsecli presets`` validates six
presets that way and must not pay torch's start-up.
"""
from __future__ import annotations

import operator
import random

ATTENTIONS = ("unidirectional", "bidirectional")


def _int(value, name: str, minimum: int | None = None) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


class SparsityConfig:
    """Abstract sparsity configuration (DeepSpeed's base class).

    ``make_layout`` is defined by the concrete kinds; calling it here raises NotImplementedError
    (DeepSpeed's base class has no such method and crashes with AttributeError).
    """

    kind = "abstract"
    per_head_argument = True  # takes different_layout_per_head (False: every head has the same layout)

    def __init__(self, num_heads, block=16, different_layout_per_head=False):
        self.num_heads = _int(num_heads, "num_heads", 1)
        self.block = _int(block, "block", 1)
        self.different_layout_per_head = bool(different_layout_per_head)
        self.num_layout_heads = self.num_heads if self.different_layout_per_head else 1

    # -- DeepSpeed's public helpers -------------------------------------------------------
    def setup_layout(self, seq_len):
        import torch

        nb = self.num_blocks(seq_len)
        return torch.zeros((self.num_heads, nb, nb), dtype=torch.int64)

    def check_and_propagate_first_head_layout(self, layout):
        if not self.different_layout_per_head:
            layout[1 : self.num_heads, :, :] = layout[0, :, :]
        return layout

    def make_layout(self, seq_len):
        raise NotImplementedError(
            "SparsityConfig is abstract and has no layout: use one of its concrete kinds, e.g. "
            "FixedSparsityConfig, BigBirdSparsityConfig or StreamingSparsityConfig (sparsecli.layouts lists them)"
        )

    @property
    def label(self) -> str:
        """The name reports and titles use (a composite names its parts)."""
        return self.kind

    def layout_notes(self, seq_len) -> list[str]:
        """What a report should add about this configuration at ``seq_len`` (e.g. ignored indices)."""
        return []

    def report_figures(self, seq_len) -> dict:
        """Extra figures for the report (``LayoutReport`` fields) that only the configuration knows."""
        return {}

    @property
    def unidirectional(self) -> bool:
        """Whether the layout is built causal, read the way this kind's layout code reads ``attention``."""
        return getattr(self, "attention", None) == "unidirectional"

    # -- shared machinery -----------------------------------------------------------------
    def num_blocks(self, seq_len) -> int:
        seq_len = _int(seq_len, "seq_len", 0)
        if seq_len % self.block != 0:
            raise ValueError(
                f"Sequence Length, {seq_len}, needs to be dividable by Block size {self.block}! "
                f"Use a multiple of {self.block} (e.g. {max(self.block, seq_len // self.block * self.block)}) "
                f"or a block size that divides {seq_len}."
            )
        return seq_len // self.block

    def _assemble(self, nb: int, head_layout) -> torch.Tensor:
        """Run ``head_layout(h) -> (nb, nb) bool`` for each layout head, in DeepSpeed's head order."""
        layout = layout_buffer((self.num_heads, nb, nb))
        if self.num_layout_heads == 1:
            layout.copy_(head_layout(0).expand(self.num_heads, nb, nb))
        else:
            for h in range(self.num_layout_heads):
                layout[h].copy_(head_layout(h))
        return layout

    def to_dict(self) -> dict:
        """Constructor arguments, as DeepSpeed names them (for reports and presets)."""
        hidden = {"num_layout_heads"} | (set() if self.per_head_argument else {"different_layout_per_head"})
        return {k: v for k, v in vars(self).items() if k not in hidden}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"{type(self).__name__}({args})"


# -- building blocks (each works on one head's (nb, nb) bool matrix) -----------------------

def layout_buffer(shape) -> torch.Tensor:
    """An uninitialized int64 tensor for the result. Writing a 2 GiB layout (16 heads at 65k
    tokens) is dominated by first-touch page faults; plain 4 KiB pages (torch's allocator) gave the
    steadiest times here, where NumPy's huge-page advice stalled for seconds on memory compaction."""
    import torch

    return torch.empty(shape, dtype=torch.int64)


def check_attention(attention) -> str:
    if attention not in ATTENTIONS:
        raise NotImplementedError(
            f'only "uni/bi-directional" attentions are supported for now! Got attention={attention!r}; '
            "use 'unidirectional' or 'bidirectional'."
        )
    return attention


def check_horizontal(attention, horizontal_global_attention) -> None:
    if attention != "bidirectional" and horizontal_global_attention:
        raise ValueError(
            'only "bi-directional" attentions can support horizontal global attention! '
            "Set horizontal_global_attention=False or attention='bidirectional'."
        )


def check_global_ranges(starts, ends) -> None:
    if ends is None:
        return
    if len(starts) != len(ends):
        raise ValueError(
            f"Global block start indices length, {len(starts)}, must be same as global block end indices "
            f"length, {len(ends)}! Give one end index per start index."
        )
    for s, e in zip(starts, ends):
        if s >= e:
            raise ValueError(
                f"Global block start index, {s}, must be smaller than global block end index, {e}! "
                "Each global range is [start, end)."
            )


def check_fits(count: int, nb: int, what: str, param: str) -> None:
    if nb < count:
        raise ValueError(
            f"{param}={count}: {count} {what} blocks do not fit in a row of {nb} blocks; use at most {nb}, "
            "or a longer sequence or a smaller block"
        )


def band(nb: int, before: int, after: int) -> torch.Tensor:
    """Bool (nb, nb): row r keeps columns [r - before, r + after] (empty where the range is)."""
    import torch

    idx = torch.arange(nb, dtype=torch.int32)
    d = idx[None, :] - idx[:, None]
    return (d >= -before) & (d <= after)


def random_blocks(m: torch.Tensor, k: int, causal: bool) -> None:
    """OR in ``k`` random columns per row, drawn exactly as DeepSpeed draws them."""
    import torch

    nb = m.shape[0]
    sample = random.sample
    cols: list[int] = []
    if causal:
        for row in range(nb):
            cols.extend(sample(range(0, row + 1), k))
    else:
        population = range(0, nb)
        for _ in range(nb):
            cols.extend(sample(population, k))
    if k and nb:
        rows = torch.arange(nb).repeat_interleave(k)
        m[rows, torch.tensor(cols, dtype=torch.int64)] = True


def fill_window(m, start: int, end: int, causal: bool) -> None:
    """DeepSpeed's local-window double loop over ``range(start, end)`` for rows and columns
    (``0 <= start``: window sizes are never negative)."""
    import torch

    if end <= start:
        return
    if causal:
        m[start:end, start:end] |= torch.ones(end - start, end - start, dtype=torch.bool).tril()
    else:
        m[start:end, start:end] = True


def global_slices(starts, ends, nb: int) -> list[tuple[int, int]]:
    """DeepSpeed's global blocks as Python slice bounds ``(s, e)``: one per index (wrapped when
    negative) or per ``[start, end)`` range (end clipped to ``nb``). Starts at or past ``nb`` are
    skipped, as DeepSpeed skips them (a config outlives one sequence length)."""
    out = []
    if ends is None:
        for idx in starts:
            if idx < nb:
                if idx < -nb:
                    raise ValueError(f"global_block_indices holds {idx}, outside a row of {nb} blocks "
                                     f"(negative indices count from the end); use an index >= -{nb}")
                idx %= nb
                out.append((idx, idx + 1))
    else:
        out = [(s, min(e, nb)) for s, e in zip(starts, ends) if s < nb]
    return out


def ignored_global_notes(starts, ends, nb: int) -> list[str]:
    """Say which global indices a layout of ``nb`` blocks ignored (past its last block) or clipped."""
    notes = []
    past = [s for s in starts if s >= nb]
    if past:
        what = "global_block_indices" if ends is None else "global ranges starting at"
        notes.append(f"{what} {', '.join(map(str, past))} ignored: past the last block ({nb - 1}), as in DeepSpeed")
    if ends is not None:
        clipped = [f"[{s}, {e})" for s, e in zip(starts, ends) if s < nb < e]
        if clipped:
            notes.append(f"global ranges {', '.join(clipped)} clipped at block {nb}")
    return notes

