"""Every file sparsecli writes: checked before the work (writable, neither an input nor another
output of the same command) and written atomically, to a temporary file beside its target that
``os.replace`` then puts in place.

A crash, a full disk or a failing writer (``torch.save``, ``savefig``, ``np.save``) therefore
never leaves a truncated or empty file under the requested name, and an existing file is only
replaced by a complete one. Failures become a one-line ``UserError``.
"""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import Callable

from .errors import UserError


def check_writable(path: Path | None, flag: str) -> None:
    """Fail before a long computation, not after it, when ``path`` cannot be written."""
    if path is None:
        return
    path = Path(path)
    problem = _unfit_target(path)
    if problem:
        raise UserError(f"{flag} {path}: {problem}")
    if not os.access(_parent(path), os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"{flag} {path}: not writable")


def check_no_clobber(outputs: dict, inputs: dict) -> None:
    """``{flag: path or None}`` of outputs and inputs: no output may overwrite an input
    (``compare A B -o A`` would replace the baseline with a report) or another output."""
    outs = [(flag, Path(p)) for flag, p in outputs.items() if p is not None]
    ins = [(flag, Path(p)) for flag, p in inputs.items() if p is not None]
    for i, (flag, path) in enumerate(outs):
        for other, src in ins:
            if _same_file(path, src):
                raise UserError(f"{flag} {path} would overwrite the {other} file {src}; write to another file")
        for other, dst in outs[:i]:
            if _same_file(path, dst):
                raise UserError(f"{other} and {flag} both name {path}; give each output its own file")


def _unfit_target(path: Path) -> str | None:
    """Why ``path`` cannot become a file we write, or None: checked up front and at the write."""
    parent = _parent(path)
    if not parent.is_dir():
        # The nearest existing ancestor says which: a file in the way, or a missing directory.
        above = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if above is not None and not above.is_dir():
            return f"{above} is a file, not a directory"
        return f"directory {parent} does not exist"
    if path.is_dir():
        return "is a directory; give a file name"
    if path.exists() and not path.is_file():  # os.replace would replace the node itself (think /dev/full as root)
        return "not a regular file; give a file path"
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)  # hard links and symlinks too
        return a.resolve() == b.resolve()
    except OSError:
        return False


def write_atomic(path: Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_name)`` to produce the file, then rename it to ``path``.

    The temporary name keeps ``path``'s suffix, so writers that pick a format or append an
    extension by suffix (matplotlib, numpy) behave as they would on ``path`` itself.
    """
    path = Path(path)
    problem = _unfit_target(path)
    if problem:
        raise UserError(f"cannot write {path}: {problem}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=_parent(path))
        os.close(fd)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        write(tmp)
        _fsync(tmp)  # the data is on disk before the name points at it
        # mkstemp makes the file 0600; the result gets the mode a plain open() would give.
        os.chmod(tmp, _target_mode(path))
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        cause = _os_error_in(e)  # torch.save reports a full disk as a RuntimeError around the OSError
        if cause is not None:
            raise UserError(f"cannot write {path}: {cause.strerror or cause}") from None
        raise
    return path


def _os_error_in(e: BaseException | None) -> OSError | None:
    """``e`` itself, or the exception it was raised from or during, if that is an OSError."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def write_text_atomic(path: Path, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write_atomic(path, write)


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def _fsync(name: str) -> None:
    fd = os.open(name, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _target_mode(path: Path) -> int:
    """The replaced file's permission bits, or what a new file gets: 0o666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    umask = os.umask(0)  # the only way to read it; set straight back
    os.umask(umask)
    return 0o666 & ~umask
