"""The attention tests' problems: small random layouts (per-head, with empty rows and global rows
and columns), split by a plan and run on gloo processes (``run_cases``), against
``blocksparse_attention`` on the whole sequence in one process (``single_process``)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class AttnCase:
    nb: int = 8
    block: int = 16
    q_heads: int = 2
    kv_heads: int = 1
    head_dim: int = 16
    batch: int = 1
    layout_heads: str = "per_head"  # "per_head" (q_heads), "one" (1, nb, nb) or "2d" (nb, nb)
    causal: bool = False
    strategy: str = "balanced"
    density: float = 0.3
    global_rows: tuple = (2,)
    global_cols: tuple = (0,)
    empty_rows: tuple = (4,)
    global_factor: float | None = None  # overrides plan.GLOBAL_FACTOR: which rows balanced spreads
    seed: int = 0

    def layout(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed)
        heads = self.q_heads if self.layout_heads == "per_head" else 1
        lay = torch.rand(heads, self.nb, self.nb, generator=gen) < self.density
        lay[:, list(self.global_rows)] = True
        lay[:, :, list(self.global_cols)] = True
        lay[:, list(self.empty_rows)] = False
        return lay[0].long() if self.layout_heads == "2d" else lay.long()


    def plan(self, world_size: int):
        from sparsecli.distributed import plan as plan_module

        default = plan_module.GLOBAL_FACTOR
        plan_module.GLOBAL_FACTOR = self.global_factor or default
        try:
            return plan_module.plan_context_parallel(self.layout(), self.block, world_size, causal=self.causal,
                                                     strategy=self.strategy)
        finally:
            plan_module.GLOBAL_FACTOR = default

    def inputs(self):
        """Full-sequence q, k, v and the gradients of the output and lse the test feeds back."""
        gen = torch.Generator().manual_seed(self.seed + 1)
        S = self.nb * self.block
        shapes = [(self.q_heads, self.head_dim), (self.kv_heads, self.head_dim), (self.kv_heads, self.head_dim),
                  (self.q_heads, self.head_dim), (self.q_heads,)]
        return [torch.randn(self.batch, h, S, *rest, generator=gen) for h, *rest in shapes]


def loss(out, lse, dout, dlse):
    """<out, dout> + <lse, dlse> over the queries that attend something (lse -inf elsewhere)."""
    return (out * dout).sum() + (torch.where(torch.isfinite(lse), lse, 0.0) * dlse).sum()


def run_cases(rank: int, world_size: int, cases: list[AttnCase]) -> list[dict]:
    """Per case, this rank's shards of the output, lse and q/k/v gradients."""
    from sparsecli.distributed import context_parallel_attention

    results = []
    for c in cases:
        plan = c.plan(world_size)
        q, k, v, dout, dlse = (plan.shard(x, rank, dim=2) for x in c.inputs())
        mine = [x.requires_grad_() for x in (q, k, v)]
        out, lse = context_parallel_attention(*mine, plan, return_lse=True)
        loss(out, lse, dout, dlse).backward()
        results.append({"out": out.detach(), "lse": lse.detach(), **{f"d{n}": m.grad for n, m in zip("qkv", mine)}})
    return results


def single_process(case: AttnCase) -> dict:
    """The same figures from ``blocksparse_attention`` on the whole sequence, in one process."""
    from sparsecli.kernels import blocksparse_attention

    q, k, v, dout, dlse = case.inputs()
    full = [x.requires_grad_() for x in (q, k, v)]
    out, lse = blocksparse_attention(*full, case.layout(), case.block, causal=case.causal, return_lse=True)
    loss(out, lse, dout, dlse).backward()
    return {"out": out.detach(), "lse": lse.detach(), **{f"d{n}": m.grad for n, m in zip("qkv", full)}}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b| over the finite entries of b (where a must match b's -inf)."""
    finite = torch.isfinite(b)
    assert torch.equal(torch.isfinite(a), finite), "the -inf entries (queries that attend nothing) differ"
    a, b = a[finite].double(), b[finite].double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) if b.numel() else 0.0


BAD_CALLS = {
    "plan for 3 ranks": "the plan splits the sequence over 3 ranks, but the process group has 2",
    "plan for 3 ranks on rank 1": "rank 1: the plan splits the sequence over 3 ranks, but the process group has 2",
    "rank 1 passes the whole sequence": "rank 1: q has 128 tokens, but the plan gives rank 1 4 of its 8 blocks of 16",
    "rank 0 cuts k short": "rank 0: k and v have 48 tokens, but the plan gives rank 0 4 of its 8 blocks of 16",
    "rank 1 q on another device": "rank 1: q is on another device type, but this rank's process group communicates on cpu",
    "rank 1 plans another split": "the ranks hold different plans (rank 0: 8 blocks of 16, causal=False, strategy=contiguous; "
                                  "rank 1: 8 blocks of 16, causal=False, strategy=zigzag)",
    "rank 1 passes float64": "rank 1: q must be float16, bfloat16 or float32",
    "rank 1 has batch 2": "rank 1 has batch size 2, rank 0 has 1",
    "rank 0 passes no plan": "rank 0: plan must be a ContextParallelPlan",
    "rank 1 sm_scale is nan": "rank 1: sm_scale must be a finite real number or None",
    "rank 1 sm_scale overflows a float": "rank 1: sm_scale must be a finite real number or None",
}


def run_bad_calls(rank: int, world_size: int) -> dict:
    """Each of ``BAD_CALLS`` on 2 ranks: the ValueError message this rank got (None if none); then
    one good call, which completes only if no rank was left inside a collective."""
    from sparsecli.distributed import context_parallel_attention, plan_context_parallel

    case = AttnCase(strategy="contiguous")
    plan = case.plan(world_size)
    q, k, v, _, _ = (plan.shard(x, rank, dim=2) for x in case.inputs())
    args = {
        "plan for 3 ranks": (q, k, v, case.plan(3)),
        "plan for 3 ranks on rank 1": (q, k, v, case.plan(3) if rank == 1 else plan),
        "rank 1 passes the whole sequence": (case.inputs()[0] if rank == 1 else q, k, v, plan),
        "rank 0 cuts k short": (q, k[:, :, :48] if rank == 0 else k, v[:, :, :48] if rank == 0 else v, plan),
        "rank 1 q on another device": (q.to("meta") if rank == 1 else q, k, v, plan),
        "rank 1 plans another split": (q, k, v, plan_context_parallel(case.layout(), case.block, world_size,
                                                                       strategy="zigzag") if rank == 1 else plan),
        "rank 1 passes float64": ((q.double(), k.double(), v.double()) if rank == 1 else (q, k, v)) + (plan,),
        "rank 1 has batch 2": ((q.expand(2, -1, -1, -1), k.expand(2, -1, -1, -1), v.expand(2, -1, -1, -1))
                               if rank == 1 else (q, k, v)) + (plan,),
        "rank 0 passes no plan": (q, k, v, "plan" if rank == 0 else plan),
    }
    got = {}
    for name, call_args in args.items():
        try:
            context_parallel_attention(*call_args)
            got[name] = None
        except ValueError as e:
            got[name] = str(e)
    try:
        context_parallel_attention(q, k, v, plan, sm_scale=float("nan") if rank == 1 else None)
        got["rank 1 sm_scale is nan"] = None
    except ValueError as e:
        got["rank 1 sm_scale is nan"] = str(e)
    try:  # float(10**400) raises OverflowError: on rank 1 alone, before the gather (it used to hang rank 0)
        context_parallel_attention(q, k, v, plan, sm_scale=10**400 if rank == 1 else None)
        got["rank 1 sm_scale overflows a float"] = None
    except ValueError as e:
        got["rank 1 sm_scale overflows a float"] = str(e)
    got["good call"] = tuple(context_parallel_attention(q, k, v, plan).shape)
    # A GPU group's argument rows go through a gloo twin made by its members on first use.
    from sparsecli.distributed.checks import _rows_group

    twin, device = _rows_group(None, torch.device("cuda"))
    rows = [torch.empty(1, dtype=torch.long) for _ in range(world_size)]
    torch.distributed.all_gather(rows, torch.tensor([rank * 10]), group=twin)
    got["twin"] = (str(device), [int(r) for r in rows], _rows_group(None, torch.device("cuda"))[0] is twin)
    return got
