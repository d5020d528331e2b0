"""The attention benchmarks' shared pieces: the case grid (``Case``, ``cases``), the layouts each
case names (``make_layout``), and how every script checks and times a call (``rel``, ``step``,
``peak_mib``, ``warm_gpu``, ``env``, ``dump``). Imported by the scripts beside it, never the
other way round: ``bench_attention.py`` (the table vs Flex and SDPA), ``bench_features.py``
(GQA, head dims, decode, compiled step), ``tune_tiles.py`` (tile sweeps), ``hopper_check.py``
(Hopper kernels vs FA4) and ``kernel_resources.py``.
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass

import torch
import triton

from sparsecli import (BigBirdSparsityConfig, BSLongformerSparsityConfig, DenseSparsityConfig,
                       FixedSparsityConfig, LocalSlidingWindowSparsityConfig)

H = 16
BF16, FP16 = torch.bfloat16, torch.float16


@dataclass(frozen=True)
class Case:
    layout: str  # sliding / fixed / bigbird / longformer / dense
    block: int
    S: int
    B: int
    D: int
    dtype: torch.dtype
    mode: str  # fwd / fwdbwd
    target: str  # which issue-3 row this case answers

    @property
    def case_id(self):
        dt = "bf16" if self.dtype == BF16 else "fp16"
        return f"{self.layout}-b{self.block}-S{self.S}-B{self.B}-D{self.D}-{dt}-{self.mode}"


def make_layout(kind: str, block: int, S: int, heads: int = H) -> torch.Tensor:
    # ~384-token windows at every block size (DeepSpeed spans w // 2 blocks each side: 3 blocks
    # at 128, 7 at 64, 13 at 32, 25 at 16)
    w = max(1, 384 // block)
    cfg = {
        "sliding": lambda: LocalSlidingWindowSparsityConfig(heads, block, num_sliding_window_blocks=w,
                                                            attention="bidirectional"),
        "fixed": lambda: FixedSparsityConfig(heads, block, num_local_blocks=max(1, 512 // block),
                                             num_global_blocks=1),
        "bigbird": lambda: BigBirdSparsityConfig(heads, block, num_random_blocks=max(1, 128 // block),
                                                 num_sliding_window_blocks=w,
                                                 num_global_blocks=max(1, 128 // block)),
        "longformer": lambda: BSLongformerSparsityConfig(heads, block, num_sliding_window_blocks=w,
                                                         global_block_indices=[0]),
        "dense": lambda: DenseSparsityConfig(heads, block),
    }[kind]()
    return cfg.make_layout(S)


def cases():
    """H=16; B*S = 32k tokens (64k for the short dense rows), S from 4096 to 32768."""
    out = []
    for D in (64, 128):
        for dt in (BF16, FP16):
            for mode in ("fwd", "fwdbwd"):
                out.append(Case("sliding", 128, 8192, 4, D, dt, mode, "b128<=0.9flex"))
        for mode in ("fwd", "fwdbwd"):
            out.append(Case("fixed", 128, 16384, 2, D, BF16, mode, "b128<=0.9flex"))
        out.append(Case("bigbird", 128, 16384, 2, D, BF16, "fwd", "global<=0.67flex"))
        out.append(Case("longformer", 128, 32768, 1, D, BF16, "fwd", "global<=0.67flex"))
    for block in (16, 32, 64):
        for mode in ("fwd", "fwdbwd"):
            out.append(Case("sliding", block, 8192, 4, 64, BF16, mode, "small>=3xflex"))
        out.append(Case("bigbird", block, 16384, 2, 64, BF16, "fwd", "small>=3xflex"))
    for D in (64, 128):
        for mode in ("fwd", "fwdbwd"):
            out.append(Case("dense", 128, 4096, 8, D, BF16, mode, "dense>=1.2xflash"))
    out.append(Case("dense", 128, 4096, 8, 64, FP16, "fwd", "dense>=1.2xflash"))
    return out


def warm_gpu(seconds=3.0):
    """Keep the GPU busy until it has left its idle clocks: without this the first case a process
    times ran 30-50% slow (tune run 8: 0.284 vs 0.179 ms for the same kernel)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def step(fn, q, k, v, dout, mode):
    if mode == "fwd":
        return lambda: fn(q, k, v)
    return lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), dout)


def peak_mib(run):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def env():
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return dict(gpu=torch.cuda.get_device_name(), capability=list(torch.cuda.get_device_capability()),
                torch=torch.__version__, triton=triton.__version__, cuda=torch.version.cuda, git_sha=sha)


def dump(path, rows):
    with open(path, "w") as f:
        json.dump({"schema_version": 1, "env": env(), "results": rows}, f, indent=1)
