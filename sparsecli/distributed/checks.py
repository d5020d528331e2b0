"""Argument checks of ``context_parallel_attention`` that every rank agrees on before any data moves.

A bad argument is often bad on one rank only (a shard cut for another rank, a tensor left on
the wrong GPU). If that rank raised alone, the others would wait in the all-to-all forever. So
each rank encodes what it was given (plan identity, shapes, dtypes, devices) as a row of
integers, the rows are all-gathered (one tiny collective every rank reaches, because nothing
raises before it; on GPUs through a gloo twin of the group, so it never waits on the GPU), and
every rank runs the same checks over every row: all ranks raise the same ValueError, naming
the rank and the values, or none does.
"""
from __future__ import annotations

import math
import numbers

import torch

from .plan import ContextParallelPlan

KERNEL_BLOCKS = (16, 32, 64, 128)
DTYPES = {torch.float16: 1, torch.bfloat16: 2, torch.float32: 3}
DTYPE_NAMES = {0: "another dtype", 1: "torch.float16", 2: "torch.bfloat16", 3: "torch.float32"}
STRATEGY_CODES = {"balanced": 0, "contiguous": 1, "zigzag": 2}
PLAN_FIELDS = 8  # is_plan, world_size, num_blocks, block, causal, strategy, fingerprint, layout heads
TENSOR_FIELDS = 9  # present, ndim, 4 sizes, dtype, device type, device index


def _device_code(device: torch.device) -> tuple[int, int]:
    kind = {"cpu": 0, "cuda": 1}.get(device.type, 2)
    return kind, -1 if device.index is None else device.index


def _device_name(kind: int, index: int) -> str:
    name = {0: "cpu", 1: "cuda"}.get(kind, "another device type")
    return f"{name}:{index}" if index >= 0 else name


def _tensor_row(t) -> list[int]:
    if not isinstance(t, torch.Tensor):
        return [0] * TENSOR_FIELDS
    shape = list(t.shape[:4]) + [-1] * (4 - min(t.dim(), 4))
    return [1, t.dim(), *shape, DTYPES.get(t.dtype, 0), *_device_code(t.device)]


def expected_device(group, q) -> torch.device:
    """The device a rank's tensors must be on for the group's backend."""
    import torch.distributed as dist

    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend:
        return torch.device("cuda", torch.cuda.current_device())
    if backend == "gloo":
        return torch.device("cpu")
    return q.device if isinstance(q, torch.Tensor) else torch.device("cpu")


def describe(q, k, v, plan, sm_scale, device: torch.device) -> list[int]:
    """This rank's row: what ``check_rows`` needs to judge its arguments from any rank."""
    if isinstance(plan, ContextParallelPlan):
        row = [1, plan.world_size, plan.num_blocks, plan.block, int(plan.causal), STRATEGY_CODES[plan.strategy],
               plan.fingerprint(), plan.layout.shape[0]]
    else:
        row = [0] * PLAN_FIELDS
    scale_ok = sm_scale is None or (isinstance(sm_scale, numbers.Real) and not isinstance(sm_scale, bool)
                                    and _finite(sm_scale))
    row.append(int(scale_ok))
    for t in (q, k, v):
        row += _tensor_row(t)
    return row + list(_device_code(device))


def check_rows(rows: list[list[int]], plan) -> None:
    """Raise the first problem found in any rank's row (the same on every rank)."""
    prefix = "context_parallel_attention: "
    size = len(rows)
    for r, row in enumerate(rows):
        if not row[0]:
            raise ValueError(f"{prefix}rank {r}: plan must be a ContextParallelPlan (from plan_context_parallel)")
        if row[1] != size:
            raise ValueError(f"{prefix}rank {r}: the plan splits the sequence over {row[1]} ranks, but the process "
                             f"group has {size}: build the plan with world_size={size}")
    if len({tuple(row[:PLAN_FIELDS]) for row in rows}) > 1:
        shown = "; ".join(f"rank {r}: {row[2]} blocks of {row[3]}, causal={bool(row[4])}, "
                          f"strategy={list(STRATEGY_CODES)[row[5]]}" for r, row in enumerate(rows))
        raise ValueError(f"{prefix}the ranks hold different plans ({shown}): build it from the same layout and "
                         "arguments on every rank")
    for r, row in enumerate(rows):
        if not row[PLAN_FIELDS]:
            raise ValueError(f"{prefix}rank {r}: sm_scale must be a finite real number or None")
        _check_rank(prefix + f"rank {r}: ", r, row, plan)
    first = _shapes(rows[0])
    for r, row in enumerate(rows[1:], 1):
        q, k = _shapes(row)
        for name, a, b in (("batch size", first[0][0], q[0]), ("query heads", first[0][1], q[1]),
                           ("key/value heads", first[1][1], k[1]), ("head dim", first[0][3], q[3])):
            if a != b:
                raise ValueError(f"{prefix}rank {r} has {name} {b}, rank 0 has {a}: every rank must pass the "
                                 "same batch, heads and head dim")
        dtype, dtype0 = _tensor_fields(row, 0)[6], _tensor_fields(rows[0], 0)[6]
        if dtype != dtype0:
            raise ValueError(f"{prefix}rank {r} passes {DTYPE_NAMES[dtype]}, rank 0 {DTYPE_NAMES[dtype0]}: every "
                             "rank must pass one dtype")


def _tensor_fields(row, i):
    start = PLAN_FIELDS + 1 + i * TENSOR_FIELDS
    return row[start:start + TENSOR_FIELDS]


def _shapes(row):
    return [tuple(_tensor_fields(row, i)[2:6]) for i in (0, 1)]


def _check_rank(prefix: str, r: int, row: list[int], plan: ContextParallelPlan) -> None:
    expected = tuple(row[-2:])
    fields = [_tensor_fields(row, i) for i in range(3)]
    for name, f in zip("qkv", fields):
        if not f[0]:
            raise ValueError(f"{prefix}{name} must be a torch.Tensor")
        if f[1] != 4:
            raise ValueError(f"{prefix}{name} must be (B, H, S_rank, D), got {f[1]} dimensions")
        if not f[6]:
            raise ValueError(f"{prefix}{name} must be float16, bfloat16 or float32")
        if tuple(f[7:9]) != expected:
            raise ValueError(f"{prefix}{name} is on {_device_name(*f[7:9])}, but this rank's process group "
                             f"communicates on {_device_name(*expected)}")
    (B, Hq, S, D), (kB, Hkv, Sk, kD) = tuple(fields[0][2:6]), tuple(fields[1][2:6])
    if fields[1][6] != fields[0][6] or fields[2][6] != fields[0][6]:
        raise ValueError(f"{prefix}q, k and v must share one dtype, got {DTYPE_NAMES[fields[0][6]]}, "
                         f"{DTYPE_NAMES[fields[1][6]]}, {DTYPE_NAMES[fields[2][6]]}")
    if tuple(fields[2][2:6]) != (kB, Hkv, Sk, kD):
        raise ValueError(f"{prefix}v must have k's shape {(kB, Hkv, Sk, kD)}, got {tuple(fields[2][2:6])}")
    if kB != B or kD != D:
        raise ValueError(f"{prefix}k {(kB, Hkv, Sk, kD)} must match q {(B, Hq, S, D)} in batch and head dim")
    want = plan.shard_length(r)
    nb, block = plan.num_blocks, plan.block
    for name, n in (("q has", S), ("k and v have", Sk)):
        if n != want:
            raise ValueError(f"{prefix}{name} {n} tokens, but the plan gives rank {r} {want // block} of its "
                             f"{nb} blocks of {block} ({want} tokens; the layout's sequence is {nb * block} tokens): "
                             f"cut each shard with plan.shard(x, {r})")
    if Hkv < 1 or Hq % Hkv:
        raise ValueError(f"{prefix}k has {Hkv} heads, which does not divide q's {Hq}")
    heads = plan.layout.shape[0]
    if heads not in (1, Hq):
        raise ValueError(f"{prefix}the plan's layout has {heads} heads, q has {Hq}: a layout gives one head or "
                         "one per query head")
    if expected[0] == 1 and block not in KERNEL_BLOCKS:
        raise ValueError(f"{prefix}the GPU kernels take blocks of {KERNEL_BLOCKS}, the plan has {block}")
    if expected[0] == 1 and (D % 8 or not 8 <= D <= 256):
        raise ValueError(f"{prefix}the GPU kernels take head dims that are multiples of 8 up to 256, got {D}")


_CPU_TWINS: dict = {}  # process group -> a gloo group of the same ranks


def _rows_group(group, device: torch.device):
    """(group, device) the argument rows are gathered through. On a GPU group, a gloo twin of it
    (made on first use by its members alone): reading a gathered GPU tensor would wait for every
    kernel queued before it, a stall per attention call; on the twin the check is CPU work."""
    import torch.distributed as dist

    if device.type != "cuda":
        return group, torch.device("cpu")
    key = group if group is not None else dist.group.WORLD
    if key not in _CPU_TWINS:
        try:
            _CPU_TWINS[key] = dist.new_group(dist.get_process_group_ranks(key), backend="gloo",
                                             use_local_synchronization=True)
        except (RuntimeError, ValueError):  # no gloo in this build: gather on the GPU group itself
            _CPU_TWINS[key] = None
    twin = _CPU_TWINS[key]
    return (group, torch.device("cuda", torch.cuda.current_device())) if twin is None else (twin, torch.device("cpu"))


def check_call(q, k, v, plan, sm_scale, group) -> tuple[int, int, torch.device]:
    """(rank, world size, device) once every rank's arguments are known to be good; otherwise the
    same ValueError on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("context_parallel_attention needs an initialized process group: call "
                         "torch.distributed.init_process_group() first (torchrun sets up its environment)")
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    if rank < 0:
        raise ValueError("context_parallel_attention: this process is not a member of the given group")
    device = expected_device(group, q)
    row = torch.tensor(describe(q, k, v, plan, sm_scale, device), dtype=torch.long)
    if size == 1:
        rows = [row.tolist()]
    else:
        check_group, comm_device = _rows_group(group, device)
        gathered = [torch.empty_like(row, device=comm_device) for _ in range(size)]
        dist.all_gather(gathered, row.to(comm_device), group=check_group)
        rows = torch.stack(gathered).tolist()
    check_rows(rows, plan if isinstance(plan, ContextParallelPlan) else None)
    return rank, size, device


def _finite(x) -> bool:
    """Whether ``x`` is a finite float; never raises (an int past float's range says False on this
    rank alone, which must not keep it from the gather every rank's verdict goes through)."""
    try:
        return math.isfinite(float(x))
    except (OverflowError, TypeError, ValueError):
        return False
