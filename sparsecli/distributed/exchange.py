"""One all-to-all that carries several tensors to each peer, as bytes.

A rank's message to a peer is a list of tensors (K and V blocks, Q rows, partial outputs and
their lse, gradients), of mixed dtypes. Both sides know every tensor's shape and dtype from the
plan, so the message needs no header: the tensors' bytes are concatenated per peer (each padded
to 16 bytes so every piece can be viewed in place as its dtype on arrival) and the whole goes
through one ``torch.distributed.all_to_all_single`` with per-peer split sizes. Nothing is sent
to a peer that needs nothing (a zero split, which NCCL's all-to-all skips), and the collective
is skipped altogether when the plan has no traffic of this kind on any rank.
"""
from __future__ import annotations

import math

import torch

ALIGN = 16


def _padded(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def _nbytes(shape, dtype) -> int:
    return math.prod(shape) * dtype.itemsize


class Pending:
    """An exchange in flight: ``wait()`` returns, per source rank, its tensors in message order."""

    def __init__(self, work, recv: torch.Tensor | None, specs, sent: torch.Tensor | None = None):
        self._work, self._recv, self._specs, self._done = work, recv, specs, None
        self._sent = sent  # the send buffer must outlive the collective

    def wait(self) -> list[list[torch.Tensor]]:
        if self._done is None:
            if self._work is not None:
                self._work.wait()
            self._done, offset = [], 0
            for specs in self._specs:
                got = []
                for shape, dtype in specs:
                    n = _nbytes(shape, dtype)
                    got.append(self._recv[offset:offset + n].view(dtype).view(shape))
                    offset += _padded(n)
                self._done.append(got)
            self._work = self._recv = self._sent = None
        return self._done


def pack(send: list[list[torch.Tensor]], device: torch.device) -> tuple[torch.Tensor, list[int]]:
    """(one uint8 send buffer, bytes per destination) of ``send[dst]`` (tensors per peer)."""
    pieces, sizes = [], []
    for tensors in send:
        size = 0
        for t in tensors:
            n = t.numel() * t.element_size()
            pieces.append(t.contiguous().view(-1).view(torch.uint8))
            if _padded(n) != n:
                pieces.append(torch.zeros(_padded(n) - n, dtype=torch.uint8, device=device))
            size += _padded(n)
        sizes.append(size)
    return (torch.cat(pieces) if pieces else torch.empty(0, dtype=torch.uint8, device=device)), sizes


def start(send: list[list[torch.Tensor]], recv_specs: list[list[tuple[tuple, torch.dtype]]], *, group,
          device: torch.device, active: bool, overlap: bool = True) -> Pending:
    """Send ``send[dst]`` (tensors) to every rank ``dst`` and receive ``recv_specs[src]``
    (``(shape, dtype)`` pairs) from every rank ``src``; ``active`` (the same on every rank) says
    whether any rank sends anything. With ``overlap`` the collective runs asynchronously and
    ``wait()`` blocks (on a GPU: makes the current stream wait); otherwise it completes here."""
    if not active:  # every spec is empty: hand back empty tensors of the right shapes
        return Pending(None, torch.empty(0, dtype=torch.uint8, device=device), recv_specs)
    import torch.distributed as dist

    buf, send_sizes = pack(send, device)
    recv_sizes = [sum(_padded(_nbytes(s, d)) for s, d in specs) for specs in recv_specs]
    recv = torch.empty(sum(recv_sizes), dtype=torch.uint8, device=device)
    work = dist.all_to_all_single(recv, buf, recv_sizes, send_sizes, group=group, async_op=overlap)
    pending = Pending(work, recv, recv_specs, buf)
    if not overlap:
        pending.wait()
    return pending
