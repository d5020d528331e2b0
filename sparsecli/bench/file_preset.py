"""A layout file as a bench preset: ``sparsecli bench --layout FILE --block B``.

The file (``.pt``, ``.npy`` or ``.npz``, read by ``sparsecli.layouts.files``) fixes the heads and
the sequence length (its blocks times ``B``), and its attention mode whether the cases are causal
(``--attention`` overrides what the file records; a file that records none is bidirectional);
the sweep's other dimensions take a preset's defaults (see ``BenchSpec``) unless flags override
them. Case ids start with the file's stem, and
the layout's fingerprint hashes the file's content, so a baseline entry goes void when the file
changes.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..kernels.limits import BLOCKS
from ..layouts.presets import BenchSpec, Preset
from ..plumbing.errors import UserError


@dataclass(frozen=True)
class FileSpec:
    """Duck-types ``SparsitySpec`` for the bench: mode, num_heads, values, block, build()."""

    path: str
    num_heads: int
    block: int
    sha256: str
    layout: object = field(compare=False, repr=False)  # the int64 (H, nb, nb) tensor
    mode: str = "file"

    @property
    def values(self) -> dict:
        # content only: the same layout saved as .pt or .npy is the same baseline entry
        return {"block": self.block, "sha256": self.sha256}

    def build(self):
        return _FileLayout(self)


class _FileLayout:
    """What ``build_layout`` calls: ``make_layout(seq_len)`` returns the file's layout."""

    def __init__(self, spec: FileSpec):
        self.spec = spec

    def make_layout(self, seq_len: int):
        nb = self.spec.layout.shape[-1]
        if seq_len != nb * self.spec.block:
            raise ValueError(f"{self.spec.path}: holds {nb} blocks of {self.spec.block} = {nb * self.spec.block} "
                             f"tokens, not {seq_len}")
        return self.spec.layout.clone()


def layout_file_preset(path: Path, block: int | None, attention: str | None = None) -> Preset:
    """The preset a layout file stands for; every problem is a one-line UserError."""
    from ..layouts.files import read_layout_file

    if block is None:
        raise UserError(f"--layout {path} needs --block B: the file holds blocks, not tokens")
    if block not in BLOCKS:
        raise UserError(f"--block must be one of {', '.join(map(str, BLOCKS))} (what the kernels take), got {block}")
    try:
        got = read_layout_file(path)
    except ValueError as e:
        raise UserError(str(e)) from None
    layout = got.layout
    causal = (attention or got.attention) == "unidirectional"
    heads, nb, _ = layout.shape
    digest = hashlib.sha256(layout.numpy().tobytes() + repr(tuple(layout.shape)).encode()).hexdigest()[:16]
    spec = FileSpec(str(path), heads, block, digest, layout)
    seq = nb * block
    return Preset(name=Path(path).stem, path=str(path), description=f"layout file {path}", seq_len=seq,
                  seed=None, sparsity=spec, bench=BenchSpec(seq_lens=(seq,), causal=causal))


def check_seq(preset: Preset, seq_lens: tuple | None) -> None:
    """A file fixes the sequence length: a different --seq is an error, not a crop or a repeat."""
    if not isinstance(preset.sparsity, FileSpec) or seq_lens is None:
        return
    wrong = [s for s in seq_lens if s != preset.seq_len]
    if wrong:
        nb = preset.seq_len // preset.sparsity.block
        raise UserError(f"--seq {wrong[0]}: {preset.path} holds {nb} blocks of {preset.sparsity.block} = "
                        f"{preset.seq_len} tokens; drop --seq or give {preset.seq_len}")
