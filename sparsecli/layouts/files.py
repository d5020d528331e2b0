"""Read a block layout from a file: ``.pt`` (a tensor), ``.npy`` or ``.npz`` (one array), shaped
``(H, nb, nb)`` or ``(nb, nb)``, holding only 0 and 1. This is what ``sparsecli layout --save``
writes, so a saved layout reads back to the same tensor.

Every problem is a ``ValueError`` that starts with the file name and says what to change, so the
CLI (``layout --from``, ``bench --layout``) can show it as one line.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

SUFFIXES = (".pt", ".npy", ".npz")


def load_layout(path: str | Path, block: int | None = None):
    """The layout in ``path`` as an int64 ``(H, nb, nb)`` tensor of 0/1. A ``.pt`` file may hold a
    FlexAttention BlockMask instead: its tiles at ``block`` (default the tile), ``from_block_mask``."""
    import numpy as np
    import torch

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: a layout file is .pt, .npy or .npz, got {path.suffix or 'no suffix'!r}")
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; give a layout file")
    try:
        data = _read(path, suffix, block)
    except pickle.UnpicklingError:  # torch.load(weights_only=True) of garbage or of arbitrary objects
        raise ValueError(f"{path}: cannot read it as a .pt layout (not a torch.save file of a tensor)") from None
    except (OSError, ValueError, RuntimeError, EOFError, zipfile.BadZipFile, KeyError) as e:
        if isinstance(e, ValueError) and str(e).startswith(f"{path}:"):
            raise
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise ValueError(f"{path}: cannot read it as a {suffix} layout ({why})") from None
    if isinstance(data, np.ndarray):
        if data.dtype == object or not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
            raise ValueError(f"{path}: holds {data.dtype} values; a layout holds 0/1 numbers")
        data = torch.from_numpy(np.ascontiguousarray(data))
    if not isinstance(data, torch.Tensor):
        raise ValueError(f"{path}: holds a {type(data).__name__}, not a tensor; save the layout tensor itself")
    return _checked(path, data)


def _read(path: Path, suffix: str, block: int | None = None):
    import numpy as np
    import torch

    if suffix == ".pt":
        block_mask = _block_mask(path)
        if block_mask is not None:
            from ..modules.flex_mask import from_block_mask

            try:
                return from_block_mask(block_mask, block)[0]
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        return torch.load(path, map_location="cpu", weights_only=True)
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as npz:
        names = list(npz.files)
        if len(names) == 1:
            return npz[names[0]]
        if "layout" in names:
            return npz["layout"]
        raise ValueError(f"{path}: holds {len(names)} arrays ({', '.join(names) or 'none'}); "
                         "keep one, or name the layout 'layout'")


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
