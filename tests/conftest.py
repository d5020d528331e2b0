"""Test-session setup: without CUDA, Triton kernels run on CPU tensors through the interpreter.

Set here, before any test module imports Triton, so every test sees the same kernel path
whether it runs alone or in the whole suite.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    # Triton's own @jit library (tl.zeros, ...) is decorated when triton.language is first
    # imported: do it now, so a test that turns the interpreter off for a while (and compiles,
    # which imports Triton) cannot leave non-interpretable helpers behind for later tests.
    import triton.language  # noqa: F401,E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; run on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
