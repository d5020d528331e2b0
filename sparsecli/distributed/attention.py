"""``context_parallel_attention``: one rank's share of block-sparse attention over a sequence split
by a ``ContextParallelPlan``.

Forward, on each rank (``RankProblem`` names the parts):

1. one all-to-all, started asynchronously: the K/V blocks other ranks' rows reference, and the
   Q rows of spread (heavy) rows to the ranks owning their keys;
2. the *local* part while that is in flight: the rank's rows against its own blocks. Its blocks
   are in ascending order, so the local problem is square and the kernels' ``causal=True``
   masks exactly the sequence's diagonal blocks per token; every other block lies wholly below
   the diagonal (the plan dropped the ones above);
3. the *helper* part: borrowed spread rows against the rank's own keys, whose partial outputs
   and lse go back to the rows' owners in a second all-to-all, started asynchronously;
4. the *remote* part: the rank's rows against the fetched blocks (never diagonal: no mask);
5. the parts merged by log-sum-exp in fp32 (``merge.py``), the spread rows' returned partials
   folded in last.

Backward mirrors it: the merge's gradient gives each part's output and lse gradients; those of
lent partials go to the helpers (one all-to-all) while the remote part's backward runs; then the
helper part's backward, and one all-to-all returns dK/dV of fetched blocks and dQ of borrowed
rows to their owners while the local part's backward runs. Received contributions are summed in
fp32. Each part is an ordinary differentiable ``blocksparse_attention(..., return_lse=True)``
call (the Triton kernels on CUDA, the PyTorch reference on CPU), recorded under
``torch.enable_grad`` in the forward and differentiated with ``torch.autograd.grad`` in the
backward, in the order that lets communication overlap compute. The steps are generators that
yield each exchange, so ``loopback.py`` can run every rank of a plan in one process.

Memory per rank: its shards, the fetched K/V and borrowed Q, the parts' outputs, and the plan.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch

from . import exchange
from .checks import check_call
from .compute import attend
from .merge import fold, fold_rows, part_grads
from .plan import ContextParallelPlan, RankProblem

# Whether exchanges run asynchronously behind the local work (scripts/cp_bench.py measures both:
# SPARSECLI_CP_OVERLAP=0 waits for each exchange before computing).
OVERLAP = os.environ.get("SPARSECLI_CP_OVERLAP", "1") != "0"


@dataclass
class RankRun:
    """One rank's call: its plan share, the group to exchange over, and the call's options."""
    plan: ContextParallelPlan
    problem: RankProblem
    world_size: int
    group: object
    device: torch.device
    scale: float | None
    overlap: bool


def _take(x: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Those tokens of a (B, H, S, ...) shard, in that order."""
    return x.index_select(2, tokens)


def _pieces(x: torch.Tensor | None, counts: list[int], block: int, empty) -> list[torch.Tensor]:
    """``x`` cut along the token dim into one piece per rank (``counts`` blocks each); without
    ``x``, ``empty(0)`` for each."""
    if x is None:
        return [empty(0) for _ in counts]
    return list(torch.split(x, [c * block for c in counts], dim=2))


def _leaf(x: torch.Tensor, build: bool) -> torch.Tensor:
    return x.detach().requires_grad_(build)


def _grad(outputs, inputs, grads):
    """torch.autograd.grad that answers zeros for an input the part did not use."""
    got = torch.autograd.grad(outputs, inputs, grads, allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs)]


@dataclass
class RankState:
    """What a rank's forward leaves for its backward: the parts' graphs and the merged result."""
    run: RankRun
    build: bool
    graph: dict = field(default_factory=dict)  # parts' inputs and outputs, differentiated in backward
    lent: list = field(default_factory=list)  # (helper rank, token rows, partial out, partial lse)
    out: torch.Tensor | None = None  # fp32 merged output and lse
    lse: torch.Tensor | None = None


# The rank's algorithm is written as generators that yield each exchange as ``(send, recv_specs,
# active)`` and receive a pending exchange (``exchange.Pending``-like: ``wait()`` gives the
# tensors from every rank). ``drive`` answers them with real collectives; the one-process
# emulator (``loopback.py``) drives every rank's generator in lockstep instead.
def forward_steps(run: RankRun, q, k, v, build: bool):
    """One rank's forward; returns its ``RankState`` (``out``/``lse`` merged in fp32)."""
    plan, p, b, N = run.plan, run.problem, run.plan.block, run.world_size
    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    st = RankState(run, build)
    g = st.graph
    send_tok, lend_tok = p.token_index(b, q.device)
    send = [[_take(k, send_tok[d]), _take(v, send_tok[d]), _take(q, lend_tok[d])] for d in range(N)]
    specs = [[((B, Hkv, c * b, D), k.dtype)] * 2 + [((B, Hq, n * b, D), q.dtype)]
             for c, n in zip(p.fetch_from, p.borrow_from)]
    pending = yield send, specs, plan.kv_traffic or plan.spread_traffic
    del send
    with torch.enable_grad() if build else contextlib.nullcontext():
        g["q"], g["k"], g["v"] = _leaf(q, build), _leaf(k, build), _leaf(v, build)
        if S:  # the local part, while K/V and Q arrive
            g["o_l"], g["lse_l"] = attend(g["q"], g["k"], g["v"], p.local, b, plan.causal, run.scale)
        got = pending.wait()
        partials = [[torch.empty(B, Hq, 0, D, dtype=q.dtype, device=q.device),
                     torch.empty(B, Hq, 0, device=q.device)] for _ in range(N)]
        if len(p.borrowed):  # the helper part: other ranks' spread rows against this rank's keys
            g["qb"] = _leaf(torch.cat([x[2] for x in got], 2), build)
            g["o_h"], g["lse_h"] = attend(g["qb"], g["k"], g["v"], p.helper, b, False, run.scale)
            partials = [list(x) for x in zip(_pieces(g["o_h"].detach(), p.borrow_from, b, None),
                                             _pieces(g["lse_h"].detach(), p.borrow_from, b, None))]
        back_specs = [[((B, Hq, len(x) * b, D), q.dtype), ((B, Hq, len(x) * b), torch.float32)] for x in p.lend_q]
        pending = yield partials, back_specs, plan.spread_traffic
        if len(p.fetched):  # the remote part, while the partials travel
            g["kf"] = _leaf(torch.cat([x[0] for x in got], 2), build)
            g["vf"] = _leaf(torch.cat([x[1] for x in got], 2), build)
            g["o_r"], g["lse_r"] = attend(g["q"], g["kf"], g["vf"], p.remote, b, False, run.scale)
    del got
    if S:
        out, lse = fold(None, None, g["o_l"].detach(), g["lse_l"].detach())
        if "o_r" in g:
            out, lse = fold(out, lse, g["o_r"].detach(), g["lse_r"].detach())
    else:
        out, lse = torch.zeros(B, Hq, 0, D, device=q.device), torch.zeros(B, Hq, 0, device=q.device)
    for s, (o_s, lse_s) in enumerate(pending.wait()):
        if len(p.lend_q[s]):
            rows = lend_tok[s]
            out, lse = fold_rows(out, lse, o_s, lse_s, rows)
            st.lent.append((s, rows, o_s, lse_s))
    st.out, st.lse = out, lse
    return st


def backward_steps(st: RankState, dout, dlse):
    """One rank's backward from its forward's state; returns ``(dq, dk, dv)``."""
    run, g, out, lse = st.run, st.graph, st.out, st.lse
    plan, p, b, N = run.plan, run.problem, run.plan.block, run.world_size
    q, k = g["q"], g["k"]
    B, Hq, S, D = q.shape
    Hkv = k.shape[1]
    if dout is None:
        dout = torch.zeros_like(out)

    def grads_of(o_x, lse_x, rows=None):
        if rows is None:
            return part_grads(o_x, lse_x, out, lse, dout, dlse)
        return part_grads(o_x, lse_x, out.index_select(2, rows), lse.index_select(2, rows),
                          dout.index_select(2, rows), None if dlse is None else dlse.index_select(2, rows))

    # Gradients of the partials other ranks computed for this rank's spread rows go back to them.
    send = [[torch.empty(B, Hq, 0, D, dtype=q.dtype, device=q.device), torch.empty(B, Hq, 0, device=q.device)]
            for _ in range(N)]
    for s, rows, o_s, lse_s in st.lent:
        send[s] = list(grads_of(o_s, lse_s, rows))
    specs = [[((B, Hq, n * b, D), q.dtype), ((B, Hq, n * b), torch.float32)] for n in p.borrow_from]
    pending = yield send, specs, plan.spread_traffic
    dq = torch.zeros(B, Hq, S, D, dtype=torch.float32, device=q.device)
    dk = torch.zeros(B, Hkv, S, D, dtype=torch.float32, device=q.device)
    dv = torch.zeros_like(dk)
    dkf = dvf = dqb = None
    if "o_r" in g:
        dq_r, dkf, dvf = _grad((g["o_r"], g["lse_r"]), (q, g["kf"], g["vf"]), grads_of(g["o_r"], g["lse_r"]))
        dq += dq_r
    got = pending.wait()
    if "o_h" in g:
        do_h, dlse_h = torch.cat([x[0] for x in got], 2), torch.cat([x[1] for x in got], 2)
        dqb, dk_h, dv_h = _grad((g["o_h"], g["lse_h"]), (g["qb"], k, g["v"]), (do_h, dlse_h))
        dk += dk_h
        dv += dv_h
    del got

    # dK/dV of fetched blocks and dQ of borrowed rows go back to their owners.
    def empty_kv(n):
        return torch.empty(B, Hkv, n, D, dtype=k.dtype, device=q.device)

    send = [list(x) for x in zip(
        _pieces(dkf, p.fetch_from, b, empty_kv), _pieces(dvf, p.fetch_from, b, empty_kv),
        _pieces(dqb, p.borrow_from, b, lambda n: torch.empty(B, Hq, n, D, dtype=q.dtype, device=q.device)))]
    specs = [[((B, Hkv, len(x) * b, D), k.dtype)] * 2 + [((B, Hq, len(y) * b, D), q.dtype)]
             for x, y in zip(p.send_kv, p.lend_q)]
    pending = yield send, specs, plan.kv_traffic or plan.spread_traffic
    del send
    if S:  # the local part's backward, while dK/dV and dQ travel
        dq_l, dk_l, dv_l = _grad((g["o_l"], g["lse_l"]), (q, k, g["v"]), grads_of(g["o_l"], g["lse_l"]))
        dq += dq_l
        dk += dk_l
        dv += dv_l
    send_tok, lend_tok = p.token_index(b, q.device)
    for s, (dk_s, dv_s, dq_s) in enumerate(pending.wait()):
        if len(p.send_kv[s]):
            dk.index_add_(2, send_tok[s], dk_s.float())
            dv.index_add_(2, send_tok[s], dv_s.float())
        if len(p.lend_q[s]):
            dq.index_add_(2, lend_tok[s], dq_s.float())
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(k.dtype)


def drive(steps, start):
    """Run a rank's steps to the end, answering each exchange with ``start(send, specs, active)``."""
    try:
        request = next(steps)
        while True:
            request = steps.send(start(*request))
    except StopIteration as done:
        return done.value


def _collectives(run: RankRun):
    """``start`` for ``drive``: the exchanges as all-to-alls on the run's process group."""
    def start(send, specs, active):
        return exchange.start(send, specs, group=run.group, device=run.device, active=active, overlap=run.overlap)

    return start


class _ContextParallelAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, run: RankRun):
        st = drive(forward_steps(run, q, k, v, any(ctx.needs_input_grad[:3])), _collectives(run))
        ctx.state = st
        ctx.set_materialize_grads(False)
        return st.out.to(q.dtype, copy=True), st.lse.clone()

    @staticmethod
    def backward(ctx, dout, dlse):
        st, ctx.state = ctx.state, None
        if not st.build:
            return None, None, None, None
        return (*drive(backward_steps(st, dout, dlse), _collectives(st.run)), None)


def context_parallel_attention(q, k, v, plan: ContextParallelPlan, *, group=None, sm_scale=None,
                               return_lse: bool = False):
    """This rank's share of ``blocksparse_attention`` over a sequence split by ``plan``.

    q ``(B, Hq, S_rank, D)``, k and v ``(B, Hkv, S_rank, D)`` are this rank's shards
    (``plan.shard(x, rank)``; give rotary embeddings ``plan.positions(rank)``). Returns this
    rank's output shard, equal (to the kernels' tolerance) to
    ``plan.shard(blocksparse_attention(q, k, v, layout, block, causal=plan.causal), rank)`` on the
    full tensors, and differentiable: the gradients of the shards are the shards of the full
    gradients. With ``return_lse`` also the natural-log lse ``(B, Hq, S_rank)`` (fp32, -inf for a
    query that attends nothing). GQA/MQA, fp16/bf16/fp32 on CUDA (NCCL), fp32 on CPU (gloo,
    through the PyTorch reference).

    ``group``: the process group (default: the world); the plan's world size must equal its
    size. Bad arguments on any rank raise the same ValueError on every rank before any data moves.
    """
    import torch.distributed as dist

    rank, size, device = check_call(q, k, v, plan, sm_scale, group)
    run = RankRun(plan, plan.problem(rank), size, group if group is not None else dist.group.WORLD, device,
               None if sm_scale is None else float(sm_scale), OVERLAP)
    out, lse = _ContextParallelAttention.apply(q, k, v, run)
    return (out, lse) if return_lse else out
