"""Host (Python) time per ``blocksparse_attention`` call.

Default (runs anywhere, no GPU): CPU tensors are sent down the kernel path as if they were CUDA
ones and ``JITFunction.run`` (Triton's launcher) returns at once, so what is timed is our side
of a call: checks, plan, cached schedules, autograd, allocations. ``--cuda``: real launches on a
GPU for a problem too small to keep it busy, so a call's wall time is its host time, Triton's
launcher included. Works on trees before issue 11 too, to compare:

    PYTHONPATH=/path/to/tree python scripts/host_overhead.py [--calls N] [--cuda]
"""
from __future__ import annotations

import argparse
import random
import time

import torch
import triton.runtime.jit

from sparsecli import BigBirdSparsityConfig


def stub_kernels():
    """Kernel path for CPU tensors, launches as no-ops; returns the attention function."""
    from sparsecli.kernels import attention

    triton.runtime.jit.JITFunction.run = lambda self, *args, **kw: None
    if hasattr(attention, "_use_triton"):  # trees before issue 11
        attention._use_triton = lambda q: True
        plan_module = attention
    else:  # one module decides kernels vs reference, another holds the launcher
        from sparsecli.kernels.fused import call as _attn_call
        from sparsecli.kernels.fused import plan as _attn_plan
        _attn_call.uses_kernels = lambda q: True
        plan_module = _attn_plan
    plan_module._num_sms = lambda device: 132
    plan_module._has_tma = lambda *xs: False
    return attention.blocksparse_attention


def time_calls(fn, calls: int, repeats: int = 9, cuda: bool = False) -> float:
    """Least over ``repeats`` of the mean microseconds per call: CPU time of this process (a
    busy shared machine stretches wall time, not this process's own work), or with ``cuda`` the
    wall time until the GPU has finished."""
    clock = time.perf_counter if cuda else time.process_time
    for _ in range(max(10, calls // 10)):
        fn()
    means = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t = clock()
        for _ in range(calls):
            fn()
        if cuda:
            torch.cuda.synchronize()
        means.append((clock() - t) / calls * 1e6)
    return min(means)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--cuda", action="store_true", help="real launches on a GPU, tiny problem")
    args = ap.parse_args()
    if args.cuda:
        from sparsecli.kernels import blocksparse_attention as attn
        block, S, H, D, device = 64, 256, 2, 64, "cuda"
    else:
        attn = stub_kernels()
        block, S, H, D, device = 64, 1024, 4, 64, "cpu"
    random.seed(0)
    layout = BigBirdSparsityConfig(H, block, different_layout_per_head=True).make_layout(S)
    q, k, v = (torch.randn(1, H, S, D, dtype=torch.float16, device=device, requires_grad=True) for _ in range(3))
    dout = torch.randn_like(q)
    with torch.no_grad():
        fwd = time_calls(lambda: attn(q, k, v, layout, block, causal=True), args.calls, cuda=args.cuda)
    step = time_calls(lambda: torch.autograd.grad(attn(q, k, v, layout, block, causal=True), (q, k, v), dout),
                      args.calls, cuda=args.cuda)
    what = "real launches, GPU idle" if args.cuda else "kernels stubbed"
    print(f"host time per call ({what}): forward {fwd:.1f} us, forward+backward {step:.1f} us")


if __name__ == "__main__":
    main()
