"""Block-sparse context parallelism on torch.distributed, planned from the layout.

``plan_context_parallel`` splits a sequence's blocks over ranks (equal work, not equal tokens)
and works out which K/V blocks each rank must receive; ``context_parallel_attention`` runs one
rank's share: its rows against its own blocks and the fetched ones, with the K/V exchange (and
the dK/dV return) as one all-to-all each. See ``docs/context-parallel.md``.

Names resolve lazily: importing ``sparsecli`` or this package imports neither torch nor
torch.distributed, and a plan needs no process group.
"""
from sparsecli.plumbing.lazy_exports import lazy_exports

_EXPORTS = {
    "ContextParallelPlan": ".plan",
    "plan_context_parallel": ".plan",
    "context_parallel_attention": ".attention",
    "STRATEGIES": ".partition",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
