"""The context-parallel plan: which rank holds which sequence blocks, and what each rank computes,
receives and sends, read from the block layout before any process group exists.

Q, K and V of a token block live on one rank (one split of the sequence). A rank computes its
rows against its own key blocks (the *local* part) and against the remote key blocks its rows
reference, which it receives (the *remote* part). One exception, under ``balanced`` only: a row
heavier than ``1 / ROW_SHARE`` of a rank's mean work (a BigBird or Longformer global row: every
key block of every head) is *spread*: its pairs with a remote key block are computed by that
block's owner, which receives the row's Q block and sends back a partial output and its
log-sum-exp (the *helper* part). Otherwise one global row would be a whole rank's work, and its
owner would need every K/V block of the sequence.

Everything here is a pure function of ``(layout, block, world_size, causal, strategy)``, so every
rank builds the same plan without talking to the others.
"""
from __future__ import annotations

import numbers
import zlib

import torch

from .partition import GLOBAL_FACTOR, ROW_SHARE, STRATEGIES, balanced_runs, contiguous_owners, owners_of_runs, zigzag_owners


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _as_block_layout(layout) -> torch.Tensor:
    """A (H, nb, nb) CPU bool copy of a 0/1 layout given as (H, nb, nb) or (nb, nb)."""
    if not isinstance(layout, torch.Tensor):
        raise ValueError(f"layout must be a torch.Tensor of 0/1, got {type(layout).__name__}")
    if layout.dim() not in (2, 3) or layout.shape[-1] != layout.shape[-2] or layout.shape[-1] == 0:
        raise ValueError(f"layout must be (H, nb, nb) or (nb, nb) with nb >= 1, got shape {tuple(layout.shape)}")
    lay = layout.detach().cpu()
    lay = lay.unsqueeze(0) if lay.dim() == 2 else lay
    if lay.shape[0] == 0:
        raise ValueError(f"layout has no heads: shape {tuple(layout.shape)}")
    if lay.dtype == torch.bool:
        return lay.clone()
    if lay.is_floating_point() or lay.is_complex():
        bad = bool(((lay != 0) & (lay != 1)).any())
    else:  # integers: two reductions instead of two full comparisons
        lo, hi = torch.aminmax(lay)
        bad = bool(lo < 0) or bool(hi > 1)
    if bad:
        raise ValueError("layout must hold only 0 and 1")
    return lay != 0


def _arrival_order(ids: torch.Tensor, owner: torch.Tensor, nb: int) -> torch.Tensor:
    """``ids`` sorted by (owner rank, block): the order an all-to-all delivers them in."""
    return ids[torch.argsort(owner[ids] * nb + ids)]


class RankProblem:
    """What one rank computes and exchanges (block ids are sequence blocks; *positions* are
    block indices within the rank's shard):

    - ``blocks``: its blocks, ascending; ``local``: layout ``(H, n, n)`` of its rows against them
      (H: the plan layout's heads, one when every head is alike);
    - ``fetched``: remote K/V blocks it receives, in arrival order; ``remote``: ``(H, n, F)``;
    - ``borrowed``: spread rows of other ranks it computes against its own keys, in arrival
      order; ``helper``: ``(H, G, n)``;
    - ``send_kv[dst]``, ``lend_q[dst]``: positions of the K/V blocks and of the spread Q rows it
      sends rank ``dst`` (``lend_q[dst]`` also says which partial outputs come back from ``dst``).
    """

    def __init__(self, blocks, local, fetched, remote, borrowed, helper, send_kv, lend_q, owner, head_repeat):
        self.blocks, self.local, self.fetched, self.remote = blocks, local, fetched, remote
        self.borrowed, self.helper, self.send_kv, self.lend_q = borrowed, helper, send_kv, lend_q
        world_size = len(send_kv)
        # Per source rank: how many fetched K/V blocks and borrowed Q rows arrive from it.
        self.fetch_from = torch.bincount(owner[fetched], minlength=world_size).tolist()
        self.borrow_from = torch.bincount(owner[borrowed], minlength=world_size).tolist()
        self._head_repeat = head_repeat
        self._token_index = {}

    def token_index(self, block: int, device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``send_kv`` and ``lend_q`` as token indices within the shard, on ``device``, made once
        per device: made per call, each would be a host-to-device copy, which waits for the
        GPU's queue to drain (a pipeline stall per index)."""
        key = (str(device), block)
        if key not in self._token_index:
            def tokens(positions):
                return (positions[:, None] * block + torch.arange(block)).flatten().to(device)

            self._token_index[key] = ([tokens(x) for x in self.send_kv], [tokens(x) for x in self.lend_q])
        return self._token_index[key]

    @property
    def work(self) -> int:
        """Non-zero blocks computed, summed over the heads of the layout the plan was given."""
        return (int(self.local.sum()) + int(self.remote.sum()) + int(self.helper.sum())) * self._head_repeat


class ContextParallelPlan:
    """One split of a sequence of ``num_blocks`` blocks of ``block`` tokens over ``world_size``
    ranks, and the traffic it implies. Build it with ``plan_context_parallel``.

    ``layout`` is the plan's own ``(H, nb, nb)`` bool copy, causal blocks above the diagonal
    already dropped, with ``H = 1`` when every head of the given layout is alike (then it serves
    any number of query heads); ``num_heads`` is the given layout's head count. ``owner[b]`` is the rank holding sequence block b; ``spread[b]`` says whether
    row b is spread over its key blocks' owners (``balanced`` only).
    """

    def __init__(self, layout: torch.Tensor, num_heads: int, block: int, world_size: int, causal: bool,
                 strategy: str, owner: list[int], spread: torch.Tensor):
        self.layout, self.num_heads, self.block, self.world_size = layout, num_heads, block, world_size
        self.causal, self.strategy = causal, strategy
        nb = self.num_blocks = layout.shape[-1]
        self.seq_len = nb * block
        self.owner = torch.tensor(owner, dtype=torch.long)
        self.spread = spread
        self._fingerprint = None
        self._blocks = [torch.nonzero(self.owner == r).flatten() for r in range(world_size)]
        position = torch.empty(nb, dtype=torch.long)  # a block's index within its owner's shard
        for b in self._blocks:
            position[b] = torch.arange(len(b))
        # Any head: (nb, nb). amax, not any: bool reductions over leading dims are far slower.
        union = layout.amax(0) if layout.shape[0] > 1 else layout[0]
        fetched, borrowed = [], []
        for r, mine in enumerate(self._blocks):
            kept = mine[~spread[mine]]  # rows r computes whole
            need = union[kept].amax(0) & (self.owner != r) if len(kept) else torch.zeros(nb, dtype=torch.bool)
            fetched.append(_arrival_order(torch.nonzero(need).flatten(), self.owner, nb))
            rows = torch.nonzero(spread & (self.owner != r)).flatten()
            rows = rows[union[rows][:, mine].amax(1)] if len(rows) and len(mine) else rows[:0]
            borrowed.append(_arrival_order(rows, self.owner, nb))
        self._problems = []
        for r, mine in enumerate(self._blocks):
            rows = layout[:, mine]
            remote = rows[:, :, fetched[r]] & ~spread[mine][None, :, None]
            self._problems.append(RankProblem(
                blocks=mine, local=rows[:, :, mine].contiguous(), fetched=fetched[r], remote=remote.contiguous(),
                borrowed=borrowed[r], helper=layout[:, borrowed[r]][:, :, mine].contiguous(),
                send_kv=[position[fetched[d][self.owner[fetched[d]] == r]] for d in range(world_size)],
                lend_q=[position[borrowed[d][self.owner[borrowed[d]] == r]] for d in range(world_size)],
                owner=self.owner, head_repeat=num_heads // layout.shape[0]))
        # The same on every rank: whether an exchange has anything to carry anywhere.
        self.kv_traffic = any(len(f) for f in fetched)
        self.spread_traffic = any(len(b) for b in borrowed)

    def fingerprint(self) -> int:
        """A checksum of everything that decides the split and the traffic (ranks compare theirs)."""
        if self._fingerprint is None:
            crc = zlib.crc32(repr((self.world_size, self.block, self.causal, self.strategy, self.num_heads)).encode())
            for t in (self.owner, self.spread, self.layout):
                crc = zlib.crc32(t.numpy().tobytes(), crc)
            self._fingerprint = crc
        return self._fingerprint

    def __repr__(self) -> str:
        return (f"ContextParallelPlan(num_blocks={self.num_blocks}, block={self.block}, world_size={self.world_size}, "
                f"causal={self.causal}, strategy={self.strategy!r}, spread_rows={int(self.spread.sum())})")

    def _rank(self, rank) -> int:
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be an integer in 0..{self.world_size - 1}, got {rank!r}")
        return int(rank)

    # -- the split ----------------------------------------------------------------------------
    def blocks(self, rank: int) -> torch.Tensor:
        """Ascending 1-D LongTensor of the sequence blocks ``rank`` holds (its rows and its K/V)."""
        return self._blocks[self._rank(rank)].clone()

    def positions(self, rank: int) -> torch.Tensor:
        """Absolute token positions of ``rank``'s shard, in shard order (for rotary embeddings and
        any other position-dependent input: a shard is not one run of the sequence in general)."""
        b = self._blocks[self._rank(rank)]
        return (b[:, None] * self.block + torch.arange(self.block)).flatten()

    def shard_length(self, rank: int) -> int:
        """Tokens of ``rank``'s shard."""
        return len(self._blocks[self._rank(rank)]) * self.block

    def shard(self, x: torch.Tensor, rank: int, dim: int = -2) -> torch.Tensor:
        """``rank``'s tokens of the full tensor ``x`` (``seq_len`` long along ``dim``), its blocks
        in ``blocks(rank)`` order."""
        dim = dim % x.dim()
        if x.shape[dim] != self.seq_len:
            raise ValueError(f"x has {x.shape[dim]} tokens along dim {dim}, but the plan splits {self.num_blocks} "
                             f"blocks of {self.block} = {self.seq_len} tokens")
        idx = self._blocks[self._rank(rank)].to(x.device)
        return x.unflatten(dim, (self.num_blocks, self.block)).index_select(dim, idx).flatten(dim, dim + 1)

    def unshard(self, shards, dim: int = -2) -> torch.Tensor:
        """The full tensor from every rank's shard (``shards[r]`` is rank r's), the inverse of ``shard``."""
        if len(shards) != self.world_size:
            raise ValueError(f"unshard needs {self.world_size} shards (one per rank), got {len(shards)}")
        dim = dim % shards[0].dim()
        for r, s in enumerate(shards):
            if s.shape[dim] != self.shard_length(r):
                raise ValueError(f"shard {r} has {s.shape[dim]} tokens along dim {dim}, the plan gives rank {r} "
                                 f"{self.shard_length(r)}")
        order = torch.cat(self._blocks).to(shards[0].device)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(len(order), device=order.device)
        whole = torch.cat(list(shards), dim).unflatten(dim, (self.num_blocks, self.block))
        return whole.index_select(dim, inverse).flatten(dim, dim + 1)

    # -- what each rank computes and exchanges ------------------------------------------------
    def problem(self, rank: int) -> RankProblem:
        """``rank``'s share of the work and of the traffic (see ``RankProblem``)."""
        return self._problems[self._rank(rank)]

    def fetched(self, rank: int) -> torch.Tensor:
        """The K/V blocks ``rank`` receives in the forward, in arrival order (by source rank,
        ascending within each): exactly the remote blocks referenced by the rows it computes
        itself (all its rows, less the remote pairs of spread rows)."""
        return self.problem(rank).fetched.clone()

    def stats(self, head_dim: int = 128, kv_heads: int = 8, dtype: torch.dtype = torch.bfloat16, *,
              q_heads: int | None = None) -> dict:
        """Per-rank figures of the split, one batch element of one layer, lists indexed by rank:

        - ``blocks``: sequence blocks held; ``work``: non-zero blocks computed (summed over the
          layout's heads; pairs of spread rows count where they are computed); ``work_share``:
          work / total work; ``imbalance``: max work / mean work;
        - ``fetched_blocks``: K/V blocks received in the forward (sequence blocks, any head);
          ``spread_rows``: its rows computed partly by other ranks; ``borrowed_rows``: other
          ranks' spread rows it computes a part of;
        - ``bytes_forward``: bytes received in the forward: K and V of the fetched blocks
          (``kv_heads`` heads of ``head_dim`` in ``dtype``), Q of the borrowed rows and the partial
          outputs and lse of its spread rows (``q_heads`` heads: default the layout's head count,
          or ``kv_heads`` for a layout shared by every head); ``bytes_backward``: dK/dV for its
          blocks from the ranks that fetched them, the output gradients of the borrowed rows and
          dQ of its spread rows;
        - ``ring_bytes``: what a dense ring (every rank sees all K and V) receives per rank each
          way, (N - 1) / N of K and V, for comparison.
        """
        head_dim, kv_heads = positive_int(head_dim, "head_dim"), positive_int(kv_heads, "kv_heads")
        q_heads = (self.num_heads if self.num_heads > 1 else kv_heads) if q_heads is None else \
            positive_int(q_heads, "q_heads")
        if not isinstance(dtype, torch.dtype):
            raise ValueError(f"dtype must be a torch.dtype, got {dtype!r}")
        item = dtype.itemsize
        kv_block = 2 * kv_heads * self.block * head_dim * item  # K and V of one block
        q_block = q_heads * self.block * head_dim * item
        partial_block = q_heads * self.block * (head_dim * item + 4)  # output and fp32 lse
        probs = self._problems
        work = [p.work for p in probs]
        total = sum(work)
        fetched = [len(p.fetched) for p in probs]
        borrowed = [len(p.borrowed) for p in probs]
        lent = [sum(len(x) for x in p.lend_q) for p in probs]
        sent_kv = [sum(len(x) for x in p.send_kv) for p in probs]
        return {
            "world_size": self.world_size, "strategy": self.strategy, "causal": self.causal,
            "num_blocks": self.num_blocks, "block": self.block,
            "blocks": [len(p.blocks) for p in probs],
            "work": work,
            "work_share": [w / total if total else 0.0 for w in work],
            "imbalance": max(work) * self.world_size / total if total else 1.0,
            "fetched_blocks": fetched,
            "spread_rows": [int(self.spread[p.blocks].sum()) for p in probs],
            "borrowed_rows": borrowed,
            "bytes_forward": [f * kv_block + b * q_block + n * partial_block for f, b, n in zip(fetched, borrowed, lent)],
            "bytes_backward": [s * kv_block + b * partial_block + n * q_block for s, b, n in zip(sent_kv, borrowed, lent)],
            "ring_bytes": (self.world_size - 1) * self.num_blocks * kv_block // self.world_size,
        }


def global_rows(lay: torch.Tensor, world_size: int) -> torch.Tensor:
    """Bool (nb,): the rows ``balanced`` spreads over their keys' owners.

    A *global* row reaches more key blocks (any head) than a rank holds and ``GLOBAL_FACTOR``
    times as many as the median row (BigBird's and Longformer's global rows, not the long rows
    of a causal layout, which are at most twice the median), and it is more than
    ``1 / ROW_SHARE`` of a rank's mean work. Kept whole, such a row is a large share of one
    rank's work and makes that rank receive nearly every K/V block of the sequence; spread, it
    costs its Q block to each key owner and a partial output back.
    """
    nb = lay.shape[-1]
    if world_size == 1:
        return torch.zeros(nb, dtype=torch.bool)
    keys = lay.amax(0).sum(1)
    work = lay.sum((0, 2))
    wide = (keys * world_size > nb) & (keys > GLOBAL_FACTOR * keys.median())
    return wide & (work * (world_size * ROW_SHARE) > work.sum())


def _balanced_runs(lay: torch.Tensor, world_size: int, spread: torch.Tensor) -> list[int]:
    """Run boundaries of ``balanced``: a block weighs the work its owner does for it, its row's
    unless the row is spread, plus the pairs of spread rows that have it as key."""
    weight = torch.where(spread, 0, lay.sum((0, 2))) + lay[:, spread].sum((0, 1))
    return balanced_runs(weight.tolist(), world_size)


def plan_context_parallel(layout, block: int, world_size: int, *, causal: bool = False,
                          strategy: str = "balanced") -> ContextParallelPlan:
    """Split a sequence of ``layout.shape[-1]`` blocks of ``block`` tokens over ``world_size`` ranks.

    ``layout``: ``(H or 1, nb, nb)`` or ``(nb, nb)`` of 0/1, the whole sequence's. ``causal``
    drops the blocks above the diagonal (diagonal blocks are masked per token by the kernels'
    ``causal=True``). ``strategy``:

    - ``"contiguous"``: equal runs of blocks in rank order (lengths differ by at most one);
    - ``"zigzag"``: ``2 * world_size`` equal chunks, rank r holding chunks r and
      ``2 * world_size - 1 - r`` (causal ring attention's split);
    - ``"balanced"``: contiguous runs of equal *work* (non-zero blocks summed over heads), not
      equal tokens. ``partition.balanced_runs`` cuts the sequence into ``world_size`` runs with
      the least largest work any contiguous split reaches, boundaries nearest the even shares;
      that largest work is below mean + the heaviest row's work. Global rows (every key block
      of every head: ``global_rows``) would be most of a rank's work, so they are *spread*:
      their pairs with remote keys are computed by the keys' owners, and a block weighs its
      row's work (unless spread) plus the spread rows' pairs with it as key. The imbalance then
      exceeds the best possible split's (not restricted to runs) by less than the heaviest
      remaining block weight's share of a rank's work.
      One run per rank keeps the rows that share keys together, so a rank fetches only its
      run's halo plus the blocks its rows reach far (global and random columns).

    Any ``world_size`` works, including one that does not divide nb (and one larger than nb:
    some ranks then hold nothing). Deterministic: every rank builds the same plan.
    """
    lay = _as_block_layout(layout)
    num_heads = lay.shape[0]
    if num_heads > 1 and bool((lay == lay[:1]).all()):
        lay = lay[:1].clone()  # one head stands for all: every figure below is 1/num_heads of the work
    block = positive_int(block, "block")
    world_size = positive_int(world_size, "world_size")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be True or False, got {causal!r}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    nb = lay.shape[-1]
    if causal:
        lay &= torch.ones(nb, nb, dtype=torch.bool).tril()
    spread = torch.zeros(nb, dtype=torch.bool)
    if strategy == "contiguous":
        owner = contiguous_owners(nb, world_size)
    elif strategy == "zigzag":
        owner = zigzag_owners(nb, world_size)
    else:
        spread = global_rows(lay, world_size)
        owner = owners_of_runs(_balanced_runs(lay, world_size, spread))
    return ContextParallelPlan(lay, num_heads, block, world_size, causal, strategy, owner, spread)
