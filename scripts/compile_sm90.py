"""Compile the fused-attention kernels for sm90 (H100/H200) on a machine without a GPU.

Runs ``blocksparse_attention`` forward and backward on CPU tensors through the kernel path with
Triton's real compiler (not the interpreter) pointed at a CUDA 9.0 target: every kernel variant a
call would launch is compiled to a cubin (ptxas ships with Triton) and nothing is launched. It
catches compile errors that the interpreter lets through, costs no device time, and prints each
variant's registers, spills, shared memory and which MMA instruction its dots became (wgmma:
Hopper's warpgroup MMA; mma.sync: the Ampere path Triton falls back to, e.g. for a dot whose M
is below 64 per warpgroup).

    python scripts/compile_sm90.py              # the variants of the GPU test grid's shapes
    TRITON_CACHE_DIR=/tmp/tc python scripts/compile_sm90.py --tma off
    python scripts/compile_sm90.py --candidates 96 256   # tune_tiles.py's TUNE lists
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # before Triton is imported: real JITFunctions

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

SEEN: dict = {}
# Shared memory a block may use on sm90 (227 KiB, cudaDevAttrMaxSharedMemoryPerBlockOptin).
SM90_SHARED = 232448
KEYS = ("HEAD_DIM", "D", "PIECES", "BLOCK_M", "BLOCK_N", "NSEG", "EVEN", "SEGMENTS", "GQA", "TMA", "KEYS_OUTER",
        "QUERY_MAJOR")


class _Sm90Driver:
    """Just enough of a driver for JITFunction.run(warmup=True): a device, a stream, a target."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)


def _compile_only(self, *args, grid, warmup, **kwargs):
    kernel = _RUN(self, *args, grid=grid, warmup=True, **kwargs)
    key = (self.fn.__name__, *(f"{k}={kwargs[k]}" for k in KEYS if k in kwargs),
           f"w{kwargs.get('num_warps')}s{kwargs.get('num_stages')}")
    if key not in SEEN:
        ptx = kernel.asm["ptx"]
        SEEN[key] = (*_resource_usage(kernel.asm["cubin"]), kernel.metadata.shared,
                     ptx.count("wgmma.mma_async."), ptx.count("mma.sync."))
    return kernel


def _resource_usage(cubin: bytes):
    """(registers, local-memory bytes per thread: spills) from ``cuobjdump --dump-resource-usage``,
    the copy bundled with Triton."""
    import re
    import subprocess
    import tempfile

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True, text=True).stdout
    reg, local = re.search(r"REG:(\d+)", text), re.search(r"LOCAL:(\d+)", text)
    return (int(reg.group(1)) if reg else None), (int(local.group(1)) if local else None)


_RUN = JITFunction.run


def _call(blocksparse_attention, B, Hq, Hkv, Sq, Sk, D, block, causal=False, segments=False,
          dtype=torch.bfloat16, backward=True):
    """One call (and its backward) on zero CPU tensors: compiles what it would launch."""
    lay = torch.ones(Hq, -(-Sq // block), -(-Sk // block), dtype=torch.bool)
    q = torch.zeros(B, Hq, Sq, D, dtype=dtype, requires_grad=True)
    k, v = (torch.zeros(B, Hkv, Sk, D, dtype=dtype, requires_grad=True) for _ in range(2))
    ids = torch.zeros(B, Sq, dtype=torch.int32) if segments else None
    out, lse = blocksparse_attention(q, k, v, lay, block, causal=causal, segment_ids=ids, return_lse=True)
    if backward:
        torch.autograd.grad((out, lse), (q, k, v), (torch.zeros_like(out), torch.zeros_like(lse)))


def _candidates(head_dims, attn_plan, blocksparse_attention):
    """Every config of tune_tiles.py's TUNE lists for these head dims, on the sweep's shape
    (sliding-window rows at block 128, full tiles, TMA), one pass varied at a time."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from tune_tiles import TUNE

    for D in head_dims:
        defaults = attn_plan.default_configs(128, attn_plan.tile_head_dim(D), torch.bfloat16)
        for i, which in enumerate(("fwd", "dkdv", "dq")):
            for cfg in dict.fromkeys([defaults[i], *TUNE[(which, D)]]):
                attn_plan.CONFIG_OVERRIDE = tuple(cfg if j == i else c for j, c in enumerate(defaults))
                _call(blocksparse_attention, 2, 2, 2, 1024, 1024, D, 128, backward=which != "fwd")
    attn_plan.CONFIG_OVERRIDE = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tma", choices=("on", "off", "both"), default="both")
    ap.add_argument("--candidates", nargs="+", type=int, metavar="D",
                    help="compile tune_tiles.py's TUNE configs for these head dims (TMA on) instead")
    args = ap.parse_args()
    triton.runtime.driver.set_active(_Sm90Driver())
    JITFunction.run = _compile_only
    from sparsecli.kernels import blocksparse_attention
    from sparsecli.kernels.fused import call as _attn_call
    from sparsecli.kernels.fused import plan as _attn_plan

    _attn_call.uses_kernels = lambda q: True
    _attn_plan._num_sms = lambda device: 132
    cases = [  # (B, Hq, Hkv, Sq, Sk, D, block, causal, segments, dtype)
        (2, 4, 4, 1024, 1024, 64, 64, False, False, torch.bfloat16),
        (2, 4, 4, 1024, 1024, 128, 128, True, False, torch.bfloat16),
        (2, 8, 2, 1024, 1024, 128, 128, True, False, torch.float16),
        (2, 8, 2, 300, 700, 96, 32, True, False, torch.bfloat16),
        (2, 8, 1, 1, 4000, 40, 16, True, False, torch.float16),
        (1, 4, 2, 512, 512, 256, 64, True, False, torch.bfloat16),
        (1, 4, 2, 512, 512, 8, 64, False, False, torch.float16),
        (2, 4, 2, 2048, 2048, 64, 16, True, True, torch.bfloat16),
    ]
    if args.candidates:
        _attn_plan._has_tma = lambda *xs: True
        _candidates(args.candidates, _attn_plan, blocksparse_attention)
    for tma in () if args.candidates else (True, False) if args.tma == "both" else (args.tma == "on",):
        _attn_plan._has_tma = lambda *xs, tma=tma: tma
        for case in cases:
            _call(blocksparse_attention, *case)
    print("kernel, constexprs, warps/stages: registers, local (spill) bytes per thread, shared bytes, "
          "wgmma / mma.sync instructions")
    for key, (regs, spills, smem, wgmma, mma) in SEEN.items():
        flags = [f for f, bad in (("SPILLS", spills), ("SHARED>227K", smem > SM90_SHARED), ("MMA.SYNC", mma))
                 if bad]
        print(f"  {' '.join(map(str, key))}: {regs}, {spills}, {smem}, {wgmma} / {mma}"
              f"{'  <-- ' + ' '.join(flags) if flags else ''}")


if __name__ == "__main__":
    main()
