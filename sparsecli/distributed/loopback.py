"""Every rank of a plan in one process: the ranks' steps (``attention.forward_steps`` and
``backward_steps``) driven in lockstep, each exchange delivered in memory.

For the one-GPU measurements (``scripts/cp_simulate.py``) and tests that check the whole
algorithm's numbers without a process group: the same code a rank runs under
``context_parallel_attention``, less the collectives (``exchange.py`` and the gloo tests cover
those). Each delivered tensor is checked against the shape and dtype its receiver expects, and
copied, so no rank reads another's memory.
"""
from __future__ import annotations

from .attention import RankRun, backward_steps, forward_steps
from .plan import ContextParallelPlan


class Delivered:
    """A finished exchange: ``wait()`` gives, per source rank, its tensors."""

    def __init__(self, tensors):
        self._tensors = tensors

    def wait(self):
        return self._tensors


def lockstep(steps: list) -> list:
    """Drive one generator per rank to the end, delivering each round of exchanges; returns the
    ranks' results."""
    n = len(steps)
    requests = [next(s) for s in steps]
    while True:
        answers = []
        for dst, (_, specs, _) in enumerate(requests):
            got = []
            for src in range(n):
                tensors = requests[src][0][dst]
                want = specs[src]
                shapes = [(tuple(t.shape), t.dtype) for t in tensors]
                if shapes != [(tuple(s), d) for s, d in want]:
                    raise AssertionError(f"rank {src} sends rank {dst} {shapes}, which expects {want}")
                got.append([t.clone() for t in tensors])
            answers.append(Delivered(got))
        results, requests = [], []
        for s, answer in zip(steps, answers):
            try:
                requests.append(s.send(answer))
            except StopIteration as done:
                results.append(done.value)
        if len(results) == n:
            return results
        if results:
            raise AssertionError("the ranks left the exchange rounds at different steps")


def emulate(plan: ContextParallelPlan, q, k, v, *, sm_scale=None, dout=None, dlse=None, overlap=False):
    """``context_parallel_attention`` on every rank of ``plan``: ``q``, ``k``, ``v`` (and the
    output and lse gradients ``dout``, ``dlse``, optional) are lists of every rank's shards.
    Returns ``(outs, lses)``, or ``(outs, lses, (dqs, dks, dvs))`` when ``dout`` is given."""
    n = plan.world_size
    runs = [RankRun(plan, plan.problem(r), n, None, q[r].device, sm_scale, overlap) for r in range(n)]
    build = dout is not None
    states = lockstep([forward_steps(runs[r], q[r], k[r], v[r], build) for r in range(n)])
    outs = [st.out.to(q[r].dtype) for r, st in enumerate(states)]
    lses = [st.lse for st in states]
    if not build:
        return outs, lses
    grads = lockstep([backward_steps(st, dout[r], None if dlse is None else dlse[r]) for r, st in enumerate(states)])
    return outs, lses, tuple(map(list, zip(*grads)))
