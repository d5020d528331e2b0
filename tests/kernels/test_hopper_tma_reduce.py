"""The TMA reduce-add the non-deterministic Hopper backward stands on (``hopper/_compat.py``:
``tma.async_atomic_add`` from triton 3.8, a private builtin over the same IR op before), checked
on its own tiny kernel (``hopper/probes.py``): it lowers to ``cp.reduce.async.bulk.tensor ...
.add`` for sm90 on any machine, and on an sm90 GPU eight programs adding into two tiles give the
float64 sums."""
import os
import subprocess
import sys

import pytest
import torch

from sparsecli.kernels import hopper

needs_gluon = pytest.mark.skipif(not hopper.gluon_available(), reason="this triton has no Gluon Hopper modules")


@needs_gluon
def test_tma_reduce_add_lowers_to_a_bulk_tensor_reduce_for_sm90():
    # A clean process: under TRITON_INTERPRET (the CPU tier) Gluon cannot compile.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("from sparsecli.kernels.hopper import probes\n"
            "ptx = probes.compile_reduce_probe().asm['ptx']\n"
            "print([w for w in ptx.split() if w.startswith('cp.reduce.async.bulk.tensor')])")
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    ops = run.stdout.strip().splitlines()[-1]
    assert "cp.reduce.async.bulk.tensor.2d.global.shared::cta.add.bulk_group" in ops, ops


def _sm90():
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9


@pytest.mark.gpu
@pytest.mark.skipif(not _sm90(), reason="needs an sm90 GPU (H100/H200)")
@pytest.mark.parametrize("programs", [2, 8, 64])
def test_tma_reduce_add_sums_concurrent_tiles_on_the_gpu(programs):
    from sparsecli.kernels.hopper import probes

    got, want = probes.run_reduce_probe(programs, seed=programs)
    assert ((got.double() - want).abs().max() / want.abs().max()).item() < 1e-6
