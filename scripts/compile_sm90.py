"""Compile the fused-attention kernels for sm90 (H100/H200) on a machine without a GPU.

Runs ``blocksparse_attention`` forward and backward on CPU tensors through the kernel path with
Triton's real compiler (not the interpreter) pointed at a CUDA 9.0 target: every kernel variant a
call would launch is compiled to a cubin (ptxas ships with Triton) and nothing is launched. It
catches compile errors that the interpreter lets through, costs no device time, and prints each
variant's registers, spills and shared memory.

    python scripts/compile_sm90.py              # the variants of the GPU test grid's shapes
    TRITON_CACHE_DIR=/tmp/tc python scripts/compile_sm90.py --tma off
"""
from __future__ import annotations

import argparse
import os

os.environ["TRITON_INTERPRET"] = "0"  # before Triton is imported: real JITFunctions

import torch  # noqa: E402
import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

SEEN: dict = {}


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
    meta = kernel.metadata
    key = (self.fn.__name__, *(f"{k}={kwargs[k]}" for k in ("HEAD_DIM", "D", "BLOCK_M", "BLOCK_N", "NSEG",
                                                           "EVEN", "SEGMENTS", "GQA", "TMA", "KEYS_OUTER")
                                 if k in kwargs), f"w{kwargs.get('num_warps')}s{kwargs.get('num_stages')}")
    if key not in SEEN:
        SEEN[key] = (*_resource_usage(kernel.asm["cubin"]), meta.shared)
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tma", choices=("on", "off", "both"), default="both")
    args = ap.parse_args()
    triton.runtime.driver.set_active(_Sm90Driver())
    JITFunction.run = _compile_only
    from sparsecli.kernels import _attn_call, _attn_plan, blocksparse_attention

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
    for tma in ((True, False) if args.tma == "both" else (args.tma == "on",)):
        _attn_plan._has_tma = lambda *xs, tma=tma: tma
        for B, Hq, Hkv, Sq, Sk, D, block, causal, segments, dtype in cases:
            lay = torch.ones(Hq, -(-Sq // block), -(-Sk // block), dtype=torch.bool)
            q = torch.zeros(B, Hq, Sq, D, dtype=dtype, requires_grad=True)
            k, v = (torch.zeros(B, Hkv, Sk, D, dtype=dtype, requires_grad=True) for _ in range(2))
            ids = torch.zeros(B, Sq, dtype=torch.int32) if segments else None
            out, lse = blocksparse_attention(q, k, v, lay, block, causal=causal, segment_ids=ids, return_lse=True)
            torch.autograd.grad((out, lse), (q, k, v), (torch.zeros_like(out), torch.zeros_like(lse)))
    print("kernel, constexprs, warps/stages: registers, local (spill) bytes per thread, shared bytes")
    for key, (regs, spills, smem) in SEEN.items():
        print(f"  {' '.join(map(str, key))}: {regs}, {spills}, {smem}")


if __name__ == "__main__":
    main()
