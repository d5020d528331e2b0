"""Layout files: what ``sparsecli layout --save`` writes and ``layout --from`` / ``bench --layout``
read back. A layout is ``(H, nb, nb)`` or ``(nb, nb)`` of 0/1; beside it a file carries the
layout's attention mode, because a causal layout read back as bidirectional gets another report
(reach "never", no blocks-above-diagonal count) and another benchmark (``causal: false``):

- ``.pt``: ``torch.save({"layout": tensor, "attention": "unidirectional"})``; a bare tensor (what
  ``--save`` wrote before the field, or any ``torch.save(layout)``) reads too.
- ``.npz``: the arrays ``layout`` and ``attention`` (a 0-d string array); a file of one array is
  that array.
- ``.npy``: holds one array, so the mode goes to a sidecar JSON beside it, ``x.npy.json`` =
  ``{"attention": "unidirectional"}``; without a sidecar the file says nothing.

A file that says nothing is bidirectional unless the caller (``--attention``) says otherwise.
Every problem is a ``ValueError`` that starts with the file name and says what to change, so the
CLI can show it as one line.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".pt", ".npy", ".npz")
ATTENTIONS = ("unidirectional", "bidirectional")
NPY_MAGIC, ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


@dataclass
class LayoutFile:
    layout: object  # int64 (H, nb, nb) tensor of 0/1
    attention: str | None  # None: the file does not say


def sidecar(path: str | Path) -> Path:
    """Where a ``.npy`` layout's attention mode lives: ``x.npy`` -> ``x.npy.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def written_files(path: str | Path) -> list[Path]:
    """Every file ``save_layout(path, ...)`` writes (checked up front by the CLI)."""
    path = Path(path)
    return [path, sidecar(path)] if path.suffix.lower() == ".npy" else [path]


def load_layout(path: str | Path, block: int | None = None):
    """The layout in ``path`` as an int64 ``(H, nb, nb)`` tensor of 0/1. A ``.pt`` file may hold a
    FlexAttention BlockMask instead: its tiles at ``block`` (default the tile), ``from_block_mask``."""
    return read_layout_file(path, block).layout


def read_layout_file(path: str | Path, block: int | None = None) -> LayoutFile:
    """The layout in ``path`` and the attention mode the file records (None if it records none;
    a BlockMask records none)."""
    import numpy as np
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give a layout file")
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: a layout file is .pt, .npy or .npz, got {path.suffix or 'no suffix'!r}")
    _check_magic(path, suffix)
    try:
        data, attention = _read(path, suffix, block)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) of garbage or of arbitrary objects
        raise ValueError(f"{path}: cannot read it as a .pt layout (not a torch.save file of a tensor)") from None
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as e:
        if isinstance(e, ValueError) and str(e).startswith(f"{path}"):
            raise
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ValueError(f"{path}: cannot read it as a {suffix} layout ({why})") from None
    if isinstance(data, np.ndarray):
        if data.dtype == object or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
            raise ValueError(f"{path}: holds {data.dtype} values; a layout holds 0/1 numbers")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"{path}: holds a {type(data).__name__}, not a tensor; save the layout tensor itself")
    return LayoutFile(_checked(path, data), _checked_attention(path, attention))


def save_layout(path: str | Path, layout, attention: str) -> Path:
    """Write ``layout`` with its ``attention`` mode to ``path`` (.pt, .npy or .npz) atomically.

    Through Python file objects: numpy.save("x.NPY") would write x.NPY.npy, and torch.save(name)
    reports a full disk as a bare C++ iostream error where a file object raises the OSError. A
    ``.npy`` always gets its sidecar, so an older sidecar never outlives the layout it described.
    """
    from ..plumbing.output_files import write_atomic, write_text_atomic

    path = Path(path)
    attention = _checked_attention(path, attention)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: a layout file is .pt, .npy or .npz, got {path.suffix or 'no suffix'!r}")
    if suffix == ".pt":
        import torch

        def write(f):
            torch.save({"layout": layout, "attention": attention}, f)
    else:
        import numpy as np

        def write(f):
            if suffix == ".npz":
                np.savez(f, layout=layout.numpy(), attention=np.array(attention))
            else:
                np.save(f, layout.numpy())

    def to_file(tmp):
        with open(tmp, "wb") as f:
            write(f)

    write_atomic(path, to_file)
    if suffix == ".npy":
        write_text_atomic(sidecar(path), json.dumps({"attention": attention}) + "\n")
    return path


def _check_magic(path: Path, suffix: str) -> None:
    """A .npy or .npz without its header is no such file at all: numpy would try it as a pickle
    and advise ``allow_pickle=True``, which is the wrong advice for a text file named x.npy."""
    if suffix == ".pt":
        return
    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError as e:
        raise ValueError(f"{path}: cannot read it ({e.strerror or e})") from None
    if suffix == ".npy" and not head.startswith(NPY_MAGIC):
        raise ValueError(f"{path}: not a valid .npy file (no NumPy header); write it with numpy.save")
    if suffix == ".npz" and not head.startswith(ZIP_MAGIC):
        raise ValueError(f"{path}: not a valid .npz file (not a zip archive); write it with numpy.savez")


def _read(path: Path, suffix: str, block: int | None = None):
    """(the layout data, the attention mode the file records or None)."""
    import numpy as np
    import torch

    if suffix == ".pt":
        block_mask = _block_mask(path)
        if block_mask is not None:
            from ..modules.flex_mask import from_block_mask

            try:
                return from_block_mask(block_mask, block)[0], None
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        data = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(data, dict):
            if "layout" not in data:
                keys = ", ".join(map(str, data)) or "none"
                raise ValueError(f"{path}: holds a dict without a 'layout' entry (keys: {keys}); "
                                 "save the layout tensor, or {'layout': tensor, 'attention': mode}")
            return data["layout"], data.get("attention")
        return data, None
    if suffix == ".npy":
        return np.load(path, allow_pickle=False), _read_sidecar(path)
    with np.load(path, allow_pickle=False) as npz:
        names = list(npz.files)
        attention = npz["attention"] if "attention" in names else None
        if attention is not None:
            attention = attention.item() if attention.shape == () else attention
        arrays = [n for n in names if n != "attention"]
        if "layout" in arrays:
            return npz["layout"], attention
        if len(arrays) == 1:
            return npz[arrays[0]], attention
        raise ValueError(f"{path}: holds {len(arrays)} arrays ({', '.join(arrays) or 'none'}); "
                         "keep one, or name the layout 'layout'")


def _read_sidecar(path: Path):
    meta = sidecar(path)
    if not meta.is_file():
        return None
    try:
        doc = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{meta}: cannot read the layout's attention mode ({str(e).splitlines()[0][:120]}); "
                         "fix or delete the file") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{meta}: expected {{\"attention\": ...}}, got a {type(doc).__name__}; fix or delete the file")
    return doc.get("attention")


def _checked_attention(path: Path, attention):
    if attention is None or attention in ATTENTIONS:
        return attention
    raise ValueError(f"{path}: records attention {attention!r}; expected one of {', '.join(ATTENTIONS)}")


def _checked(path: Path, t):
    import torch

    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(f"{path}: has shape {tuple(t.shape)}; a layout is (heads, nb, nb) or (nb, nb)")
    H, rows, cols = t.shape
    if rows != cols:
        raise ValueError(f"{path}: has {rows} query blocks and {cols} key blocks; a layout is square (nb, nb)")
    if H == 0 or rows == 0:
        raise ValueError(f"{path}: has shape {tuple(t.shape)}; a layout needs at least one head and one block")
    if t.is_complex() or t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{path}: holds values that are not 0 or 1")
    bad = (t != 0) & (t != 1)
    if bool(bad.any()):
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{path}: holds {t[where].item()!r} at {where}; a layout holds only 0 and 1")
    return t.to(torch.int64)


def _block_mask(path: Path):
    """The BlockMask a ``.pt`` file holds, or None (``flex_mask.load_block_mask``)."""
    from ..modules.flex_mask import load_block_mask

    return load_block_mask(path)


def block_mask_block(path: str | Path) -> int | None:
    """The tile side of the BlockMask in ``path`` (a ``.pt`` file), or None for any other file."""
    path = Path(path)
    if path.suffix.lower() != ".pt" or not path.is_file():
        return None
    try:
        block_mask = _block_mask(path)
    except Exception:  # noqa: BLE001 (not readable as a BlockMask: load_layout says why)
        return None
    if block_mask is None:
        return None
    tile = int(block_mask.BLOCK_SIZE[0])
    return next((b for b in (128, 64, 32, 16) if tile % b == 0), tile)  # as from_block_mask picks it
