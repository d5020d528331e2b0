"""Run a function on N CPU processes joined by a gloo process group (``torch.multiprocessing``,
spawn), and collect each rank's return value or exception.

Every launch pays for N fresh Python processes importing torch (seconds on a small machine), so
tests hand one launch a whole list of cases. A rank that hangs (a collective some rank never
joined) fails the test after ``timeout`` seconds instead of blocking the suite.
"""
from __future__ import annotations

import os
import pickle
import queue
import socket
import traceback
from datetime import timedelta

import torch.multiprocessing as mp


class RankFailed(AssertionError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(fn, rank, world_size, port, results, args):
    # The PyTorch reference is the CPU path under test (the Triton interpreter would take minutes).
    os.environ["TRITON_INTERPRET"] = "0"
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)  # N ranks share the machine's cores: no intra-op threads fighting over them

    try:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=60))
        # As bytes: a tensor put on the queue as itself would be shared memory that dies with this process.
        results.put((rank, True, pickle.dumps(fn(rank, world_size, *args))))
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put((rank, False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def run_ranks(fn, world_size: int, *args, timeout: float = 120.0) -> list:
    """``[fn(rank, world_size, *args) for rank in range(world_size)]``, each in its own process of
    one gloo group. ``fn`` must be a module-level function (spawn pickles it by name)."""
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_entry, args=(fn, r, world_size, port, results, args), daemon=True)
             for r in range(world_size)]
    for p in procs:
        p.start()
    got = {}
    try:
        while len(got) < world_size:
            try:
                rank, ok, value = results.get(timeout=timeout)
            except queue.Empty:
                missing = sorted(set(range(world_size)) - set(got))
                raise RankFailed(f"ranks {missing} of {world_size} did not finish in {timeout:.0f} s (a hang?)") from None
            got[rank] = (ok, value)
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    failed = {r: v for r, (ok, v) in got.items() if not ok}
    if failed:
        raise RankFailed("\n".join(f"rank {r}: {v}" for r, v in sorted(failed.items())))
    return [pickle.loads(got[r][1]) for r in range(world_size)]
