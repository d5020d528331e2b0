"""Every file sparsecli writes goes through here: a temporary file beside the target, flushed and
renamed over it. A failure (read-only directory, target is a directory, full disk, a writer that
raises) leaves the target as it was and no temporary behind, and becomes one ``UserError`` line.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import UserError


def write_with(path: str | Path, writer: Callable[[BinaryIO], object]) -> Path:
    """Call ``writer(binary file)`` on a temporary file, then rename it to ``path``.

    Writers get a file object, never a name, so a library cannot add a suffix of its own
    (``numpy.save("x.NPY")`` writes ``x.NPY.npy``) or open the target directly.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: directory {parent} does not exist")
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a directory; give a file name")
    if path.exists() and not path.is_file():  # renaming over /dev/full or a FIFO would replace the node itself
        raise UserError(f"cannot write {path}: not a regular file; give a file path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk may only say so here
        # mkstemp makes the file 0600; the result should get the mode a plain open() would give.
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        cause = _os_error_in(e)
        if cause is not None:  # torch.save wraps the file's OSError in a RuntimeError
            raise UserError(f"cannot write {path}: {cause.strerror or cause}") from None
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return write_with(path, lambda f: f.write(text.encode("utf-8")))


def _os_error_in(e: BaseException) -> OSError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _target_mode(path: Path) -> int:
    """The replaced file's permission bits, or what a new file gets: 0o666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    umask = os.umask(0)  # the only way to read it; set straight back
    os.umask(umask)
    return 0o666 & ~umask
