"""Kernel test fixtures (TRITON_INTERPRET for CPU runs is set once, in tests/conftest.py)."""
import math

import pytest
import torch


@pytest.fixture
def poison(monkeypatch):
    """Make every float buffer the kernels allocate start as NaN, so unwritten elements show."""
    empty, empty_like = torch.empty, torch.empty_like

    def nan_fill(t):
        return t.fill_(math.nan) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: nan_fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: nan_fill(empty_like(*a, **k)))
