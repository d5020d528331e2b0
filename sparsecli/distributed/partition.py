"""How the sequence's blocks are split over ranks: the three strategies, as plain integer lists.

Each function takes the work of every block row (non-zero blocks of that query row, summed over
heads) or just the block count, and returns the ``world_size + 1`` boundaries of contiguous runs
(``contiguous``, ``balanced``) or the owner rank of every block (``zigzag``). No torch here: the
splitting is a few thousand integers and must be easy to test and to reason about.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from itertools import accumulate

STRATEGIES = ("balanced", "contiguous", "zigzag")
# balanced: a row is spread when it is over 1/ROW_SHARE of a rank's mean work and reaches more
# key blocks than a rank holds and GLOBAL_FACTOR times the median row's (plan.global_rows).
ROW_SHARE = 32
GLOBAL_FACTOR = 8


def even_runs(n: int, parts: int) -> list[int]:
    """Boundaries of ``parts`` runs over ``n`` items whose lengths differ by at most one (the longer
    runs first), e.g. ``even_runs(10, 4) == [0, 3, 6, 8, 10]``."""
    q, r = divmod(n, parts)
    return [i * q + min(i, r) for i in range(parts + 1)]


def contiguous_owners(nb: int, world_size: int) -> list[int]:
    """Rank of every block: equal runs of blocks in rank order."""
    return owners_of_runs(even_runs(nb, world_size))


def zigzag_owners(nb: int, world_size: int) -> list[int]:
    """Rank of every block: ``2 * world_size`` equal chunks, rank r holding chunks r and
    ``2 * world_size - 1 - r`` (the split causal ring attention uses: each rank gets one early,
    cheap chunk and one late, expensive one)."""
    chunks = even_runs(nb, 2 * world_size)
    owner = []
    for c in range(2 * world_size):
        owner += [min(c, 2 * world_size - 1 - c)] * (chunks[c + 1] - chunks[c])
    return owner


def owners_of_runs(bounds: list[int]) -> list[int]:
    """Rank of every block given the boundaries of contiguous runs (run r is rank r's)."""
    owner = []
    for r in range(len(bounds) - 1):
        owner += [r] * (bounds[r + 1] - bounds[r])
    return owner


def balanced_runs(work: list[int], world_size: int) -> list[int]:
    """Boundaries of ``world_size`` contiguous runs of block rows whose largest work is the least
    any contiguous split can have, each boundary then as close to its even share of the work as
    that optimum allows.

    The algorithm (deterministic, O(nb + world_size * log(nb) * log(total))):

    1. *Bottleneck.* With prefix sums ``P``, a cap ``C`` is feasible when a greedy walk that gives
       each run as many rows as fit under ``C`` (a binary search in ``P`` per run) needs at most
       ``world_size`` runs; the greedy walk is optimal for a given cap, so a binary search over
       integer caps finds the least feasible one, ``C*``: the optimal contiguous bottleneck.
    2. *Refinement.* The greedy walk leaves the last ranks light (or empty). Instead, boundary k is
       placed, left to right, where the prefix work is closest to ``k * total / world_size``
       (ties: closest to ``k * nb / world_size``, so zero-work rows spread evenly too), within
       ``[lo_k, reach]``: ``lo_k`` is the leftmost boundary from which the rest still fits in the
       remaining runs under ``C*`` (a greedy walk from the end), ``reach`` the last row the
       current run can take under ``C*``. That interval is never empty (``reach`` grows with the
       run's start and covers ``lo_k`` from ``lo_(k-1)``), so the bottleneck stays ``C*``.

    How far from optimal: no split at all, contiguous or not, can have a largest work below
    ``max(total / world_size, max(work))``, and the greedy walk at cap ``ceil(total / world_size)
    + max(work) - 1`` always fits, so ``C* < mean + max(work)``: the imbalance (``C* / mean``)
    exceeds the unrestricted optimum's by less than ``max(work) / mean``. With fine blocks (one
    row is a small share of a rank's work) that is a few percent at most; only a row holding
    most of a rank's share (a global row at high world size) can cost more, and then every
    strategy that keeps a row whole pays the same.
    """
    nb = len(work)
    total = sum(work)
    if total == 0 or world_size == 1:
        return even_runs(nb, world_size)
    prefix = [0, *accumulate(work)]

    def reach(start: int, cap: int) -> int:
        """The end of the longest run from ``start`` whose work is at most ``cap``."""
        return bisect_right(prefix, prefix[start] + cap) - 1

    def runs_needed(cap: int) -> int:
        start, runs = 0, 0
        while start < nb:
            start, runs = reach(start, cap), runs + 1
        return runs

    lo_cap, hi_cap = max(max(work), -(-total // world_size)), total
    while lo_cap < hi_cap:
        mid = (lo_cap + hi_cap) // 2
        if runs_needed(mid) <= world_size:
            hi_cap = mid
        else:
            lo_cap = mid + 1
    cap = lo_cap

    # lo[k]: the leftmost boundary k from which runs k..world_size-1 can still cover the rest.
    lo = [0] * (world_size + 1)
    lo[world_size] = nb
    for k in range(world_size - 1, 0, -1):
        lo[k] = bisect_left(prefix, prefix[lo[k + 1]] - cap)
    bounds = [0]
    for k in range(1, world_size):
        first, last = max(lo[k], bounds[-1]), reach(bounds[-1], cap)
        target_work, target_rows = k * total / world_size, k * nb / world_size
        # Candidates: where the prefix crosses the target work, clamped into [first, last]; among
        # the rows of equal prefix (zero-work rows) the one nearest the even token split.
        cross = bisect_left(prefix, target_work, first, last + 1)
        best = None
        for b in {min(max(c, first), last) for c in (cross - 1, cross)}:
            same = (bisect_left(prefix, prefix[b], first, last + 1), bisect_right(prefix, prefix[b], first, last + 1) - 1)
            b = min(max(round(target_rows), same[0]), same[1])
            key = (abs(prefix[b] - target_work), abs(b - target_rows), b)
            best = key if best is None or key < best else best
        bounds.append(best[2])
    bounds.append(nb)
    return bounds
