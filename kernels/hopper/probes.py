"""Tiny Gluon kernels that check one Hopper feature on its own before a real kernel relies on it.

``tma_reduce_add``: triton 3.6 has no Python wrapper for the TMA reduce-add (``_compat.py``);
its probe has every program add a tile into one of two tiles of a global fp32 buffer, so the
result shows both that the op lowers (``cp.reduce.async.bulk.tensor``) and that concurrent adds
to the same elements are atomic. ``compile_reduce_probe`` builds it for sm90 without a GPU;
``run_reduce_probe`` runs it and returns (got, expected).

    python -m sparsecli.kernels.hopper.probes        # compile for sm90; on an sm90 GPU also run
"""
from __future__ import annotations

ROWS, COLS = 64, 64  # one wgmma accumulator's rows; the tile the backward reduce-adds


def _kernel():
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import tma

    from ._common import store_rows

    @gluon.jit
    def _tma_reduce_probe(desc, src, ROWS: gl.constexpr, COLS: gl.constexpr):
        layout: gl.constexpr = gl.BlockedLayout([1, 4], [4, 8], [4, 1], [1, 0])
        r = gl.arange(0, ROWS, layout=gl.SliceLayout(1, layout))
        c = gl.arange(0, COLS, layout=gl.SliceLayout(0, layout))
        pid = gl.program_id(0)
        x = gl.load(src + pid * ROWS * COLS + r[:, None] * COLS + c[None, :])
        smem = gl.allocate_shared_memory(gl.float32, [ROWS, COLS], desc.layout)
        store_rows(desc, smem, (pid % 2) * ROWS, x, REDUCE=True)  # even programs: tile 0, odd: tile 1
        tma.store_wait(0)

    return _tma_reduce_probe


_PROBE = []


def reduce_probe():
    if not _PROBE:
        _PROBE.append(_kernel())
    return _PROBE[0]


def _layout():
    from triton.experimental.gluon import language as gl

    return gl.NVMMASharedLayout.get_default_for([ROWS, COLS], gl.float32)


def compile_reduce_probe():
    """``triton.compile`` of the probe for sm90 (no GPU needed)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    sig = {"desc": f"tensordesc<fp32[{ROWS},{COLS}],{_layout()!r}>", "src": "*fp32", "ROWS": "constexpr",
           "COLS": "constexpr"}
    src = GluonASTSource(reduce_probe(), sig, {(2,): ROWS, (3,): COLS})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))


def run_reduce_probe(programs: int = 8, seed: int = 0):
    """(got, expected) fp32 (128, 64) on the current CUDA device: a random start plus every
    program's random tile added into tile ``program % 2``."""
    import torch
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

    g = torch.Generator(device="cuda").manual_seed(seed)
    out = torch.randn(2 * ROWS, COLS, device="cuda", generator=g)
    src = torch.randn(programs, ROWS, COLS, device="cuda", generator=g)
    want = out.double().clone()
    want[:ROWS] += src[0::2].double().sum(0)
    want[ROWS:] += src[1::2].double().sum(0)
    desc = TensorDescriptor(out, [2 * ROWS, COLS], [COLS, 1], [ROWS, COLS], _layout())
    reduce_probe()[(programs,)](desc, src, ROWS=ROWS, COLS=COLS, num_warps=4)
    torch.cuda.synchronize()
    return out, want


def main():
    import torch

    ptx = compile_reduce_probe().asm["ptx"]
    print("tma reduce-add compiles for sm90:", "cp.reduce.async.bulk.tensor" in ptx and ".add" in ptx)
    if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] == 9:
        got, want = run_reduce_probe()
        err = ((got.double() - want).abs().max() / want.abs().max()).item()
        print(f"tma reduce-add on the GPU: max error {err:.2e} ({'right' if err < 1e-6 else 'WRONG'})")


if __name__ == "__main__":
    main()
