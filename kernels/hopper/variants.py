"""Every compiled variant of the Hopper kernels, and compiling one for sm90 without a GPU.

Gluon does not run under ``TRITON_INTERPRET``, but ``triton.compile`` builds sm90 PTX and cubin
on any machine (the wheel ships ptxas), so CI compiles every variant listed here and
``scripts/hopper_resources.py`` reads their registers, spills and shared memory.
Launches (``launch.py``) take their constexprs from the same tables, so a variant that runs is a
variant that CI compiles.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

DTYPES = ("fp16", "bf16")
HEAD_DIMS = (64, 128)
BLOCK_N = 128  # keys per tile in the forward and dQ kernels; queries x keys = 128 x 128
BWD_BLOCK_M = 64  # queries per step of the dK/dV kernel (its program owns 128 keys)

# Pipeline depth per head dim: 2 x 64 KB K/V stages at D128 (FA3's choice), 3 at D64.
FWD_STAGES = {64: 3, 128: 2}
DQ_STAGES = {64: 3, 128: 2}
DKDV_STAGES = {64: 3, 128: 3}
# Registers: three warpgroups (two consumers + the producer's), 168 each on average; the
# producer gives its share back (24) and each consumer warpgroup gets 240.
MAXNREG = 168
FWD_PIPELINE_DEFAULT = True


@dataclass(frozen=True)
class Variant:
    kernel: str  # "fwd", "dq", "dkdv"
    dtype: str  # "fp16" / "bf16"
    head_dim: int
    causal: bool
    pipeline: bool = False  # forward only: QK^T of tile i+1 overlaps the softmax of tile i

    @property
    def name(self):
        extra = "-pipe" if self.pipeline else ""
        return f"{self.kernel}-{self.dtype}-d{self.head_dim}{'-causal' if self.causal else ''}{extra}"


def all_variants():
    out = []
    for dt, d, causal in itertools.product(DTYPES, HEAD_DIMS, (False, True)):
        out += [Variant("fwd", dt, d, causal, pipeline=False), Variant("fwd", dt, d, causal, pipeline=True),
                Variant("dq", dt, d, causal), Variant("dkdv", dt, d, causal)]
    return out


def _desc(dtype: str, rows: int, head_dim: int) -> str:
    """Signature type of a Gluon TMA descriptor over (rows, head_dim) tiles (NVMMA layout)."""
    from triton.experimental.gluon import language as gl

    layout = gl.NVMMASharedLayout.get_default_for([rows, head_dim], getattr(gl, _GL[dtype]))
    return f"tensordesc<{dtype}[{rows},{head_dim}],{layout!r}>"


_GL = {"fp16": "float16", "bf16": "bfloat16"}


def compile_sm90(v: Variant):
    """``triton.compile`` of one variant for sm90 (CUDA 9.0), no GPU needed."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource

    kernel, sig, consts = _signature(v)
    names = list(sig)
    constexprs = {(names.index(k),): val for k, val in consts.items()}
    for k in consts:
        sig[k] = "constexpr"
    src = GluonASTSource(kernel, sig, constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4, maxnreg=MAXNREG))


def _signature(v: Variant):
    d, dt = v.head_dim, v.dtype
    if v.kernel == "fwd":
        from ._fwd import _attn_fwd_hopper

        sig = dict(q_desc=_desc(dt, 64, d), k_desc=_desc(dt, BLOCK_N, d), v_desc=_desc(dt, BLOCK_N, d),
                   o_desc=_desc(dt, 64, d), LSE="*fp32", PartAcc="*fp32", PartML="*fp32",
                   NUM_SLOTS="i32", programs="*i32", seg_start="*i32", B="i32", H="i32", S="i32",
                   NUM_OUTER="i32", qk_scale="fp32", HEAD_DIM=None, BLOCK_N=None, STAGES=None,
                   CAUSAL=None, PIPELINE=None)
        consts = dict(HEAD_DIM=d, BLOCK_N=BLOCK_N, STAGES=FWD_STAGES[d], CAUSAL=v.causal,
                      PIPELINE=v.pipeline)
        return _attn_fwd_hopper, sig, consts
    common = dict(programs="*i32", seg_start="*i32", B="i32", H="i32", S="i32", NUM_OUTER="i32",
                  qk_scale="fp32", sm_scale="fp32")
    if v.kernel == "dq":
        from ._bwd import _attn_dq_hopper

        sig = dict(q_desc=_desc(dt, 64, d), k_desc=_desc(dt, BLOCK_N, d), v_desc=_desc(dt, BLOCK_N, d),
                   do_desc=_desc(dt, 64, d), dq_desc=_desc(dt, 64, d), Out=f"*{dt}", LSE="*fp32",
                   Delta="*fp32", **common, HEAD_DIM=None, BLOCK_N=None, STAGES=None, CAUSAL=None)
        consts = dict(HEAD_DIM=d, BLOCK_N=BLOCK_N, STAGES=DQ_STAGES[d], CAUSAL=v.causal)
        return _attn_dq_hopper, sig, consts
    if v.kernel == "dkdv":
        from ._bwd import _attn_dkdv_hopper

        sig = dict(k_desc=_desc(dt, 64, d), v_desc=_desc(dt, 64, d), q_desc=_desc(dt, BWD_BLOCK_M, d),
                   do_desc=_desc(dt, BWD_BLOCK_M, d), dk_desc=_desc(dt, 64, d), dv_desc=_desc(dt, 64, d),
                   LSE="*fp32", Delta="*fp32", **common, HEAD_DIM=None, BLOCK_M=None, STAGES=None,
                   CAUSAL=None)
        consts = dict(HEAD_DIM=d, BLOCK_M=BWD_BLOCK_M, STAGES=DKDV_STAGES[d], CAUSAL=v.causal)
        return _attn_dkdv_hopper, sig, consts
    raise ValueError(f"unknown kernel {v.kernel!r}")
