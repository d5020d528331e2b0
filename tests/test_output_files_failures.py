"""Every output goes through a temporary file and a rename (``sparsecli.plumbing.output_files``): a
failure leaves the target as it was, no temporary behind, and one line that says why."""
import errno
import os

import pytest

from sparsecli.plumbing import output_files
from sparsecli.plumbing.errors import UserError
from sparsecli.plumbing.output_files import write_atomic, write_text_atomic
from tests.full_disk import full_disk  # noqa: F401  (fixture)


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, full_disk):
    target = tmp_path / "out.txt"
    target.write_text("old contents")
    with pytest.raises(UserError, match="cannot write .*out.txt: No space left on device"):
        write_text_atomic(target, "x" * 10_000)
    assert target.read_text() == "old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_torch_save_wrapping_the_os_error_is_still_one_line(tmp_path, full_disk):
    import torch

    def save(tmp):
        with open(tmp, "wb") as f:
            torch.save(torch.ones(64, 64), f)  # torch raises RuntimeError from the file's OSError

    with pytest.raises(UserError, match="No space left on device"):
        write_atomic(tmp_path / "l.pt", save)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case", ["directory", "missing parent", "device", "read-only"])
def test_unwritable_targets_are_one_line_errors(tmp_path, monkeypatch, case):
    target = {"directory": tmp_path, "missing parent": tmp_path / "no" / "x.txt", "device": "/dev/null",
              "read-only": tmp_path / "x.txt"}[case]
    if case == "read-only":  # root ignores permission bits, so refuse the way a read-only directory does
        def refuse(*a, **k):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        monkeypatch.setattr(output_files.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError) as info:
        write_text_atomic(target, "data")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"cannot write {target}")
    assert {"directory": "is a directory", "missing parent": "does not exist", "device": "not a regular file",
            "read-only": "Permission denied"}[case] in msg
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_the_bench_and_compare_writers_are_this_one():
    """Results, baselines, plans and reports of bench and compare go through the same writer."""
    from sparsecli.cli import bench, compare

    assert bench.write_text_atomic is write_text_atomic and compare.write_text_atomic is write_text_atomic
