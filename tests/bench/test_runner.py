"""The sweep end to end on the CPU with a fake timer: checks, statuses, speedups, failures."""
import pytest
import torch

from sparsecli.bench import providers
from sparsecli.bench.cases import Overrides, expand
from sparsecli.bench.runner import Runner, RunOptions
from sparsecli.bench.timing import Timing
from sparsecli.layouts.presets import load_preset

MS = {"sparse": 1.0, "sdpa-flash": 2.0, "naive": 4.0, "sdpa-masked": 3.0}


def fake_timer(fn):
    fn()  # the callable must run; its "time" is fixed per provider through the closure's name
    ms = MS[fake_timer.provider]
    return Timing(ms, 0.9 * ms, 1.1 * ms)


def run(preset, providers_, passes=("fwd", "fwd+bwd"), monkeypatch=None):
    plan = expand([load_preset(str(preset))], Overrides(seq_lens=(128,), head_dims=(16,), passes=passes,
                                                        providers=providers_))
    seen = []

    def timer(fn):
        fake_timer.provider = seen[-1]["provider"] if seen else None
        return fake_timer(fn)

    class Spy(Runner):
        def _measure(self, case, row, fn, x, fig, errors):
            seen.append(row)
            return super()._measure(case, row, fn, x, fig, errors)

    emitted = []
    rows = Spy(plan, RunOptions(device="cpu", timer=timer), emitted.append).run()
    assert len(emitted) == len(rows) == len(plan.cases)
    return {(r["pass"], r["provider"]): r for r in rows}


def test_rows_are_checked_timed_and_compared(tiny_preset):
    rows = run(tiny_preset, ("sparse", "sdpa-flash", "naive", "sdpa-masked"))
    for (pass_, provider), r in rows.items():
        assert r["status"] == "ok", r
        assert r["check"] == "passed" and r["max_rel_err"] < 1e-6  # fp32 vs fp64 reference
        assert r["median_ms"] == MS[provider]
        assert r["speedup_vs_flash"] == pytest.approx(MS["sdpa-flash"] / MS[provider])
        assert r["tflops_dense"] > r["tflops_nnz"] > 0  # bigbird at S=128 is not dense
    assert rows[("fwd+bwd", "sparse")]["tflops_nnz"] == pytest.approx(3.5 * rows[("fwd", "sparse")]["tflops_nnz"] / 1)
    assert rows[("fwd", "sdpa-flash")]["index_build_ms"] is None  # dense: no layout to index
    assert rows[("fwd", "sparse")]["case_id"] == "tiny/fwd/S128-B1-H2-D16-fp32/sparse"


def test_a_failing_provider_says_why_and_the_sweep_goes_on(tiny_preset, monkeypatch):
    def broken(ctx):
        raise RuntimeError("kernel exploded")

    def wrong(ctx):
        return lambda q, k, v: q + k * v  # runs, differentiates, computes the wrong thing

    monkeypatch.setitem(providers.SETUPS, "sparse", broken)
    monkeypatch.setitem(providers.SETUPS, "naive", wrong)
    rows = run(tiny_preset, ("sparse", "naive", "sdpa-flash"))
    assert rows[("fwd", "sparse")]["status"] == "failed"
    assert "kernel exploded" in rows[("fwd", "sparse")]["reason"]
    assert rows[("fwd", "naive")]["status"] == "wrong" and rows[("fwd", "naive")]["check"] == "failed"
    assert rows[("fwd", "sdpa-flash")]["status"] == "ok"


@pytest.mark.parametrize("exc, status", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory"), "oom"),
    (RuntimeError("No available kernel. Aborting execution."), "unavailable"),
    (ImportError("no module named cudnn"), "unavailable"),
    (ValueError("head dim must be one of"), "unsupported"),
    (KeyError("x"), "failed"),
])
def test_exceptions_map_to_statuses(exc, status):
    assert providers.classify(exc)[0] == status
