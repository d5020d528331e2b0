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
# The dK/dV kernel that also reduce-adds dQ (deterministic=False) stages fp32 dQ tiles and dS^T in
# shared memory as well: 2 Q/dO stages at D128 fit (208 KB), 3 do not.
DKDV_ATOMIC_STAGES = {64: 3, 128: 2}
DELTA_ROWS = 32  # rows per program of the Delta pre-pass (deterministic=False): 128 spilled at D128
# Registers: three warpgroups (two consumers + the producer's), 168 each on average; the
# producer gives its share back (24) and each consumer warpgroup gets 240.
MAXNREG = 168
# Forward loop structures (pipeline, pingpong, Q buffers, deferred O rescale); the first is the default.
# Measured on the H200 (docs/hopper-notes.md, run 2): pipelined + ping-pong 618 TF/s on dense D128
# against 593 without ping-pong and 540 for the plain loop (kept as the simple reference). The
# second Q buffer passed the GPU tests (run 4) but is untimed; the deferred rescale is new and
# untimed: neither is the default.
FWD_LOOPS = ((True, True, 1, False), (True, True, 2, False), (False, False, 1, False), (True, True, 1, True))
# Tile shapes (outer, inner) of the three launches, as the plan builds their schedules
# (``fused.plan``): forward and dQ 128 queries x 128 keys, dK/dV 128 keys x 64-query steps.
PLAN_TILES = {"fwd": (128, BLOCK_N), "dq": (128, BLOCK_N), "dkdv": (128, BWD_BLOCK_M)}


@dataclass(frozen=True)
class Variant:
    kernel: str  # "fwd", "dq", "dkdv"
    dtype: str  # "fp16" / "bf16"
    head_dim: int
    causal: bool
    pipeline: bool = False  # forward only: QK^T of tile i+1 and PV of tile i issued together
    pingpong: bool = False  # forward only (with pipeline): the consumers take turns issuing GEMMs
    q_bufs: int = 1  # forward only: Q buffers (2: the next program's Q loads during this one)
    defer: bool = False  # forward only (with pipeline): O rescaled just before the next PV (FA3)
    dlse: bool = False  # dQ and delta: the lse output has a gradient (it joins Delta)
    dq_atomic: bool = False  # dK/dV only: also reduce-adds dQ (the deterministic=False backward)

    @property
    def name(self):
        extra = ("-pipe" if self.pipeline else "") + ("-pingpong" if self.pingpong else "")
        extra += "-defer" if self.defer else ""
        extra += f"-q{self.q_bufs}" if self.kernel == "fwd" else ""
        extra += "-dlse" if self.dlse else ""
        extra += "-dqatomic" if self.dq_atomic else ""
        return f"{self.kernel}-{self.dtype}-d{self.head_dim}{'-causal' if self.causal else ''}{extra}"

    @property
    def gluon(self) -> bool:
        """A Gluon kernel (warp-specialized, wgmma, TMA); "delta" is a plain Triton kernel."""
        return self.kernel != "delta"


def all_variants():
    out = []
    for dt, d, causal in itertools.product(DTYPES, HEAD_DIMS, (False, True)):
        out += [Variant("fwd", dt, d, causal, *loop) for loop in FWD_LOOPS]
        out += [Variant("dq", dt, d, causal), Variant("dkdv", dt, d, causal),
                Variant("dkdv", dt, d, causal, dq_atomic=True)]
        if causal:  # return_lse's gradient (ring attention is causal); the flag only adds a load
            out.append(Variant("dq", dt, d, causal, dlse=True))
    out += [Variant("delta", dt, d, False, dlse=dlse) for dt, d, dlse in itertools.product(DTYPES, HEAD_DIMS,
                                                                                          (False, True))]
    return out


def _desc(dtype: str, rows: int, head_dim: int) -> str:
    """Signature type of a Gluon TMA descriptor over (rows, head_dim) tiles (NVMMA layout)."""
    from triton.experimental.gluon import language as gl

    layout = gl.NVMMASharedLayout.get_default_for([rows, head_dim], getattr(gl, _GL[dtype]))
    return f"tensordesc<{dtype}[{rows},{head_dim}],{layout!r}>"


_GL = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def compile_sm90(v: Variant):
    """``triton.compile`` of one variant for sm90 (CUDA 9.0), no GPU needed."""
    import triton
    from triton.backends.compiler import GPUTarget

    kernel, sig, consts = _signature(v)
    names = list(sig)
    constexprs = {(names.index(k),): val for k, val in consts.items()}
    for k in consts:
        sig[k] = "constexpr"
    if not v.gluon:
        src = triton.compiler.ASTSource(kernel, sig, constexprs)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
    from triton.experimental.gluon._runtime import GluonASTSource

    src = GluonASTSource(kernel, sig, constexprs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options=dict(num_warps=4, maxnreg=MAXNREG))


def _signature(v: Variant):
    d, dt = v.head_dim, v.dtype
    if v.kernel == "fwd":
        from ._fwd import _attn_fwd_hopper

        sig = dict(q_desc=_desc(dt, 64, d), k_desc=_desc(dt, BLOCK_N, d), v_desc=_desc(dt, BLOCK_N, d),
                   o_desc=_desc(dt, 64, d), LSE="*fp32", PartAcc="*fp32", PartML="*fp32",
                   NUM_SLOTS="i32", programs="*i32", seg_start="*i32", NUM_PROGS="i32", B="i32", H="i32",
                   GROUP="i32", SQ="i32", SK="i32", NUM_OUTER="i32", qk_scale="fp32", HEAD_DIM=None, BLOCK_N=None, STAGES=None,
                   CAUSAL=None, PIPELINE=None, PINGPONG=None, Q_BUFS=None, DEFER_RESCALE=None)
        consts = dict(HEAD_DIM=d, BLOCK_N=BLOCK_N, STAGES=FWD_STAGES[d], CAUSAL=v.causal,
                      PIPELINE=v.pipeline, PINGPONG=v.pingpong, Q_BUFS=v.q_bufs, DEFER_RESCALE=v.defer)
        return _attn_fwd_hopper, sig, consts
    common = dict(programs="*i32", seg_start="*i32", NUM_PROGS="i32", B="i32", H="i32", GROUP="i32",
                  SQ="i32", SK="i32", NUM_OUTER="i32", qk_scale="fp32", sm_scale="fp32")
    if v.kernel == "dq":
        from ._bwd import _attn_dq_hopper

        sig = dict(q_desc=_desc(dt, 64, d), k_desc=_desc(dt, BLOCK_N, d), v_desc=_desc(dt, BLOCK_N, d),
                   do_desc=_desc(dt, 64, d), dq_desc=_desc(dt, 64, d), Out=f"*{dt}", LSE="*fp32",
                   Delta="*fp32", DLSE="*fp32", **common, HEAD_DIM=None, BLOCK_N=None, STAGES=None,
                   CAUSAL=None, HAS_DLSE=None)
        consts = dict(HEAD_DIM=d, BLOCK_N=BLOCK_N, STAGES=DQ_STAGES[d], CAUSAL=v.causal, HAS_DLSE=v.dlse)
        return _attn_dq_hopper, sig, consts
    if v.kernel == "dkdv":
        from ._bwd import _attn_dkdv_hopper

        # Without dq_atomic the launch passes dK's descriptor as the unread dq_desc.
        dq = _desc("fp32", BWD_BLOCK_M, d) if v.dq_atomic else _desc(dt, 64, d)
        sig = dict(k_desc=_desc(dt, 64, d), v_desc=_desc(dt, 64, d), q_desc=_desc(dt, BWD_BLOCK_M, d),
                   do_desc=_desc(dt, BWD_BLOCK_M, d), dk_desc=_desc(dt, 64, d), dv_desc=_desc(dt, 64, d),
                   dq_desc=dq, LSE="*fp32", Delta="*fp32", **common, HEAD_DIM=None, BLOCK_M=None, STAGES=None,
                   CAUSAL=None, DQ_ATOMIC=None)
        stages = (DKDV_ATOMIC_STAGES if v.dq_atomic else DKDV_STAGES)[d]
        consts = dict(HEAD_DIM=d, BLOCK_M=BWD_BLOCK_M, STAGES=stages, CAUSAL=v.causal, DQ_ATOMIC=v.dq_atomic)
        return _attn_dkdv_hopper, sig, consts
    if v.kernel == "delta":
        from ._bwd import _attn_bwd_delta

        sig = dict(Out=f"*{dt}", dO=f"*{dt}", DLSE="*fp32", Delta="*fp32", HEAD_DIM=None, ROWS=None, HAS_DLSE=None)
        return _attn_bwd_delta, sig, dict(HEAD_DIM=d, ROWS=DELTA_ROWS, HAS_DLSE=v.dlse)
    raise ValueError(f"unknown kernel {v.kernel!r}")


def facts(v: Variant, resources: bool = False) -> dict:
    """What a compiled variant is made of: the Hopper instructions in its PTX, shared memory, and
    (``resources``: ptxas -v on the PTX) registers per thread and spill bytes."""
    compiled = compile_sm90(v)
    ptx = compiled.asm["ptx"]
    out = dict(name=v.name, gluon=v.gluon, target_sm90a=".target sm_90a" in ptx,
               wgmma=ptx.count("wgmma.mma_async"), tma_reduces=ptx.count("cp.reduce.async.bulk.tensor"),
               wgmma_wait=ptx.count("wgmma.wait_group"), tma_loads=ptx.count("cp.async.bulk.tensor"),
               setmaxnreg=sorted({int(line.split()[-1].rstrip(";")) for line in ptx.splitlines()
                                  if "setmaxnreg" in line}),
               shared=compiled.metadata.shared, cubin_bytes=len(compiled.asm["cubin"]))
    if resources:
        out.update(_ptxas_resources(ptx))
    return out


def _ptxas_resources(ptx: str) -> dict:
    import re
    import subprocess
    import tempfile

    import triton.knobs

    with tempfile.TemporaryDirectory() as d:
        src = f"{d}/k.ptx"
        with open(src, "w") as f:
            f.write(ptx)
        log = subprocess.run([triton.knobs.nvidia.ptxas.path, "-arch=sm_90a", "-v", src, "-o", f"{d}/k.cubin"],
                             capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return dict(registers=int(regs.group(1)) if regs else None,
                spill_stores=int(spill.group(1)) if spill else None,
                spill_loads=int(spill.group(2)) if spill else None)


def _facts_or_error(v: Variant, resources: bool) -> dict:
    try:
        return facts(v, resources)
    except Exception as e:  # reported per variant; the caller decides what a failure means
        return dict(name=v.name, error=f"{type(e).__name__}: {str(e)[-1500:]}")


def main(argv=None):
    """``python -m sparsecli.kernels.hopper.variants [--json] [--resources] [NAME ...]``: compile
    every variant (or those whose name starts with a NAME) for sm90 and report each."""
    import argparse
    import json
    import os

    ap = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--json", action="store_true", help="one JSON list on stdout")
    ap.add_argument("--resources", action="store_true", help="also registers and spills (ptxas -v)")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET"):
        # Under the interpreter Triton's own jit library functions are interpreted, and Gluon
        # cannot call them: compiling needs a process without it.
        raise SystemExit("unset TRITON_INTERPRET to compile Gluon kernels")
    from concurrent.futures import ProcessPoolExecutor

    todo = [v for v in all_variants() if not args.names or any(v.name.startswith(n) for n in args.names)]
    rows = []
    with ProcessPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 1) or 1) as pool:
        for r in pool.map(_facts_or_error, todo, [args.resources] * len(todo)):
            rows.append(r)
            if not args.json:
                print(r["name"], r.get("error") or " ".join(f"{k}={val}" for k, val in r.items() if k != "name"),
                      flush=True)
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
