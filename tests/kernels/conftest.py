"""Kernel tests run on CPU through Triton's interpreter when no CUDA device is present.

The variable must be set before any module decorated with ``@triton.jit`` is imported.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
