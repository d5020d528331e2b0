"""Test-session setup: without CUDA, Triton kernels run on CPU tensors through the interpreter.

Set here, before any test module imports Triton, so every test sees the same kernel path
whether it runs alone or in the whole suite.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; run on the GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
