"""Bad arguments to context_parallel_attention, on one rank or on all: every rank raises the same
ValueError naming the rank and the values, and none is left waiting in a collective (a hang
would fail the launch after its timeout)."""
import pytest
import torch

from sparsecli.distributed import context_parallel_attention, plan_context_parallel

from .cases import BAD_CALLS, run_bad_calls
from .ranks import run_ranks


def test_every_rank_raises_the_same_error():
    per_rank = run_ranks(run_bad_calls, 2, timeout=90)
    for name, message in BAD_CALLS.items():
        got = [r[name] for r in per_rank]
        assert got[0] is not None and got[0] == got[1], (name, got)
        assert got[0].startswith("context_parallel_attention: ") and message in got[0], (name, got[0])
    assert [r["good call"] for r in per_rank] == [(1, 2, 64, 16)] * 2
    assert [r["twin"] for r in per_rank] == [("cpu", [0, 10], True)] * 2


def test_without_a_process_group():
    plan = plan_context_parallel(torch.ones(4, 4), 16, 1)
    q = torch.zeros(1, 1, 64, 16)
    with pytest.raises(ValueError, match="needs an initialized process group"):
        context_parallel_attention(q, q, q, plan)
