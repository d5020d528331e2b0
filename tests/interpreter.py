"""Run a test check in a fresh Python with Triton's interpreter forced on (and CUDA hidden).

TRITON_INTERPRET must be set before any kernel module is imported, so a check that must take the
interpreted-kernel path even on a GPU machine runs in its own process.
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_interpreted(module: str, function: str) -> subprocess.CompletedProcess:
    code = f"from {module} import {function}; {function}()"
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
