"""A full disk, simulated: files opened for writing under a temporary name (what
``output_files.write_atomic`` hands its writers) take 64 bytes and then fail with ENOSPC."""
import builtins
import errno
import io
import os

import pytest


class _FullFile(io.RawIOBase):
    def __init__(self, real):
        self.real, self.room = real, 64

    def writable(self):
        return True

    def write(self, b):
        if len(b) > self.room:
            self.real.write(bytes(b[: self.room]))
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.real.write(b)

    def close(self):
        self.real.close()
        super().close()


@pytest.fixture
def full_disk(monkeypatch):
    real_open = builtins.open

    def fake_open(file, mode="r", *args, **kwargs):
        name = os.path.basename(str(file))
        if "w" not in mode or not (name.startswith(".") and ".tmp" in name):
            return real_open(file, mode, *args, **kwargs)
        f = _FullFile(real_open(file, "wb"))
        return f if "b" in mode else io.TextIOWrapper(f, encoding=kwargs.get("encoding") or "utf-8")

    monkeypatch.setattr(builtins, "open", fake_open)
