"""Every output goes through a temporary file and a rename: a failure leaves the target as it
was, no temporary behind, and one line that says why."""
import errno
import io
import os

import pytest

from sparsecli import atomic_write
from sparsecli.atomic_write import write_text, write_with
from sparsecli.errors import UserError


class FullDisk(io.RawIOBase):
    """A file that takes ``room`` bytes and then fails like a full disk (ENOSPC)."""

    def __init__(self, real, room):
        self.real, self.room = real, room

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.room:
            self.real.write(bytes(b[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.real.write(b)

    def fileno(self):
        return self.real.fileno()

    def flush(self):
        self.real.flush()

    def close(self):
        self.real.close()
        super().close()


@pytest.fixture
def full_disk(monkeypatch):
    """Make every write through ``atomic_write`` fail after 100 bytes."""
    real_fdopen = os.fdopen
    monkeypatch.setattr(atomic_write.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode), 100))


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, full_disk):
    target = tmp_path / "out.txt"
    target.write_text("old contents")
    with pytest.raises(UserError, match="cannot write .*out.txt: No space left on device"):
        write_text(target, "x" * 10_000)
    assert target.read_text() == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_writer_exceptions_clean_up_and_propagate(tmp_path):
    def boom(f):
        f.write(b"partial")
        raise RuntimeError("writer bug")

    with pytest.raises(RuntimeError, match="writer bug"):
        write_with(tmp_path / "x.bin", boom)
    assert list(tmp_path.iterdir()) == []


def test_torch_save_wrapping_the_os_error_is_still_one_line(tmp_path, full_disk):
    import torch

    with pytest.raises(UserError, match="No space left on device"):
        write_with(tmp_path / "l.pt", lambda f: torch.save(torch.ones(64, 64), f))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["directory", "missing parent", "device", "read-only"])
def test_unwritable_targets_are_one_line_errors(tmp_path, monkeypatch, case):
    target = {"directory": tmp_path, "missing parent": tmp_path / "no" / "x.txt", "device": "/dev/null",
              "read-only": tmp_path / "x.txt"}[case]
    if case == "read-only":  # root ignores permission bits, so refuse the way a read-only directory does
        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        monkeypatch.setattr(atomic_write.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError) as info:
        write_text(target, "data")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"cannot write {target}")
    assert {"directory": "is a directory", "missing parent": "does not exist", "device": "not a regular file",
            "read-only": "Permission denied"}[case] in msg
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_new_files_get_the_umask_mode_and_replaced_files_keep_theirs(tmp_path):
    old = os.umask(0o022)
    try:
        assert (write_text(tmp_path / "new.txt", "a").stat().st_mode & 0o777) == 0o644
        kept = tmp_path / "kept.txt"
        kept.write_text("x")
        kept.chmod(0o600)
        write_text(kept, "y")
        assert (kept.stat().st_mode & 0o777) == 0o600 and kept.read_text() == "y"
    finally:
        os.umask(old)


def test_the_bench_results_writer_is_this_one(tmp_path, full_disk):
    from sparsecli.bench import results

    with pytest.raises(UserError, match="No space left"):
        results.write_atomic(tmp_path / "r.json", "{}" * 1000)
    assert list(tmp_path.iterdir()) == []
