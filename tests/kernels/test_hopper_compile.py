"""Every Hopper (Gluon) kernel variant compiles for sm90 on this machine, GPU or not.

Gluon kernels do not run under TRITON_INTERPRET, so CI (CPU, the triton of the constraints file)
catches API drift and layout or resource breakage here; the GPU tier checks the numerics
(``test_hopper_gpu.py``). The compiles run once, in a process without TRITON_INTERPRET (under it
Triton's own library functions are interpreted and Gluon cannot call them). Each variant must be
Hopper-native: async wgmma, TMA bulk copies, registers handed from the producer to the
consumers, and shared memory that fits on the SM.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from sparsecli.kernels import hopper
from sparsecli.kernels.hopper import variants as V

pytestmark = pytest.mark.skipif(not hopper.gluon_available(), reason="this triton has no Gluon Hopper modules")

SMEM_LIMIT = 232448  # bytes of shared memory one block may use on sm90 (227 KB)


@pytest.fixture(scope="module")
def compiled():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-m", "sparsecli.kernels.hopper.variants", "--json"],
                         env=env, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    return {r["name"]: r for r in json.loads(run.stdout.strip().splitlines()[-1])}


@pytest.mark.parametrize("name", [v.name for v in V.all_variants()])
def test_variant_compiles_for_sm90(compiled, name):
    r = compiled[name]
    assert "error" not in r, r.get("error")
    assert r["target_sm90a"] and r["cubin_bytes"] > 0
    if not r["gluon"]:  # the Delta pre-pass of the one-launch backward: a plain Triton kernel
        assert r["wgmma"] == 0 and 0 < r["shared"] <= SMEM_LIMIT
        return
    assert r["wgmma"] > 0 and r["wgmma_wait"] > 0
    assert r["tma_loads"] > 0
    assert 24 in r["setmaxnreg"] and 240 in r["setmaxnreg"]  # producer 24, consumers 240
    assert 0 < r["shared"] <= SMEM_LIMIT


def test_pipelined_forward_issues_qk_of_the_next_tile_early(compiled):
    # The pipelined loop has a prologue QK^T and a PV epilogue besides its steady state.
    for dt in V.DTYPES:
        assert compiled[f"fwd-{dt}-d128-pipe-pingpong-q1"]["wgmma"] > compiled[f"fwd-{dt}-d128-q1"]["wgmma"]



def test_one_launch_backward_reduce_adds_dq_with_tma(compiled):
    # deterministic=False: the dK/dV kernel also runs dQ += dS K (one more GEMM per warpgroup and
    # step) and adds it to global memory with a TMA reduce-add; the deterministic kernel has none.
    for v in V.all_variants():
        if v.kernel == "dkdv" and v.dq_atomic:
            plain = compiled[v.name.replace("-dqatomic", "")]
            assert compiled[v.name]["tma_reduces"] > 0 and plain["tma_reduces"] == 0
            assert compiled[v.name]["wgmma"] > plain["wgmma"]


def test_second_q_buffer_fits_shared_memory(compiled):
    # The default forward double-buffers Q at every head dim: still one program per SM.
    for v in V.all_variants():
        if v.kernel == "fwd" and v.q_bufs == 2:
            assert compiled[v.name]["shared"] <= SMEM_LIMIT


def test_plan_schedules_use_hopper_tiles():
    from sparsecli.kernels.fused.plan import AttnArgs, _Plan

    lay = torch.ones(2, 4, 4, dtype=torch.long)
    plan = _Plan(AttnArgs(lay, 128, backend="hopper"), (1, 2, 512, 64), (1, 2, 512, 64), torch.bfloat16,
                 torch.device("cpu"))
    for which, tiles in V.PLAN_TILES.items():
        sch = plan.schedule(which)
        assert (sch.outer, sch.inner, sch.nseg) == (*tiles, 1)
    assert plan.schedule("dq").num_slots == 0  # dQ programs own whole rows
