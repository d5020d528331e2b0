"""Atomic output: a failing writer never leaves a file (or a temporary) behind, modes are a plain open()'s."""
import errno
import json
import os
import stat

import pytest

from sparsecli.plumbing.output_files import check_writable, write_atomic, write_text_atomic
from sparsecli.plumbing.errors import UserError


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


def test_unwritable_paths_fail_early(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_writable(tmp_path / "nope" / "r.json", "-o")
    with pytest.raises(UserError, match="is a directory"):
        check_writable(tmp_path, "-o")
    with pytest.raises(UserError, match="does not exist"):
        write_text_atomic(tmp_path / "nope" / "r.json", "{}")
    with pytest.raises(UserError, match="is a directory"):
        write_text_atomic(tmp_path, "{}")
    json.loads(write_text_atomic(tmp_path / "ok.json", "{}").read_text())
    assert leftovers(tmp_path) == ["ok.json"]


def test_a_writer_failing_half_way_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")

    def full_disk(name):
        with open(name, "wb") as f:
            f.write(b"half a")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(UserError, match=f"^cannot write {target}: No space left on device$"):
        write_atomic(target, full_disk)
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == ["plot.png"]

    def crash(name):
        raise RuntimeError("writer bug")

    with pytest.raises(RuntimeError, match="writer bug"):  # not an I/O error: not hidden
        write_atomic(tmp_path / "new.pt", crash)
    assert leftovers(tmp_path) == ["plot.png"]


def test_the_temporary_keeps_the_suffix_writers_choose_formats_by(tmp_path):
    seen = []
    write_atomic(tmp_path / "perf.svg", lambda name: seen.append(name) or open(name, "w").close())
    assert seen[0].endswith(".svg") and (tmp_path / "perf.svg").exists()


@pytest.mark.skipif(os.name != "posix", reason="checks POSIX permission bits and umask (not on Windows)")
def test_atomic_writes_get_umask_mode_or_keep_the_replaced_files(tmp_path):
    old = os.umask(0o022)
    try:
        new = write_text_atomic(tmp_path / "new.json", "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644  # as open() would make it, not mkstemp's 0600
        os.umask(0o077)
        assert stat.S_IMODE(write_text_atomic(tmp_path / "private.json", "{}").stat().st_mode) == 0o600
        shared = tmp_path / "shared.json"
        shared.write_text("{}")
        shared.chmod(0o664)
        write_text_atomic(shared, '{"a": 1}')  # replacing keeps the existing file's mode
        assert stat.S_IMODE(shared.stat().st_mode) == 0o664 and json.loads(shared.read_text()) == {"a": 1}
    finally:
        os.umask(old)
