"""Gate arithmetic on synthetic results: ratios to sdpa-flash, tolerance floor, noise, verdicts."""
import pytest

from sparsecli.bench.compare import compare, gate_entries, make_baseline

from .conftest import results_doc, row

BASE = {"sparse": 0.50, "three-op": 1.50, "sdpa-flash": 1.00, "flex": 0.8}


def verdicts(report):
    return {c.case_id.rsplit("/", 1)[1]: c.verdict for c in report.cases}


def test_identical_runs_pass_and_only_our_kernels_are_gated():
    r = compare(results_doc(BASE), results_doc(BASE))
    assert verdicts(r) == {"sparse": "pass", "three-op": "pass"} and not r.failed


def test_injected_ten_percent_slowdown_is_caught():
    slow = dict(BASE, sparse=BASE["sparse"] * 1.10)
    r = compare(results_doc(BASE), results_doc(slow), floor=0.10)
    assert verdicts(r)["sparse"] == "regression" and r.failed
    case = next(c for c in r.cases if c.verdict == "regression")
    assert case.change == pytest.approx(0.10)


@pytest.mark.parametrize("ours, flash", [(1.03, 1.0), (0.97, 1.0), (1.0, 0.97), (1.0, 1.03), (1.03, 0.97 * 1.03)])
def test_three_percent_noise_is_not_flagged(ours, flash):
    noisy = {k: v * ours for k, v in BASE.items() if k != "sdpa-flash"}
    noisy["sdpa-flash"] = BASE["sdpa-flash"] * flash
    r = compare(results_doc(BASE), results_doc(noisy), floor=0.10)
    assert not r.failed, r.to_dict()


def test_absolute_drift_is_not_gated_only_the_ratio():
    everything_slower = {k: v * 1.5 for k, v in BASE.items()}  # a slower runner, same kernels
    assert not compare(results_doc(BASE), results_doc(everything_slower)).failed


def test_improvement_beyond_tolerance_marks_the_baseline_stale():
    fast = dict(BASE, sparse=BASE["sparse"] * 0.85)
    r = compare(results_doc(BASE), results_doc(fast))
    assert verdicts(r)["sparse"] == "stale" and r.failed


def test_missing_failed_new_and_not_run_cases():
    base = results_doc(BASE)
    base["results"].append(row("p/fwd+bwd/S4096-B1-H16-D64-bf16", "sparse", 1.0))
    base["results"].append(row("p/fwd+bwd/S4096-B1-H16-D64-bf16", "sdpa-flash", 2.0))
    new = results_doc(dict(BASE, **{"three-op": "oom"}))
    new["results"].append(row("p/bwd/S4096-B1-H16-D64-bf16", "sparse", 1.0))
    new["results"].append(row("p/bwd/S4096-B1-H16-D64-bf16", "sdpa-flash", 2.0))
    r = compare(base, new)
    got = {c.case_id: c.verdict for c in r.cases}
    assert got["p/fwd/S4096-B1-H16-D64-bf16/three-op"] == "missing"
    assert got["p/fwd+bwd/S4096-B1-H16-D64-bf16/sparse"] == "not_run"
    assert got["p/bwd/S4096-B1-H16-D64-bf16/sparse"] == "new"
    assert r.failed and r.counts == {"pass": 1, "missing": 1, "not_run": 1, "new": 1}


def test_flash_failing_makes_our_case_missing():
    r = compare(results_doc(BASE), results_doc(dict(BASE, **{"sdpa-flash": "unavailable"})))
    assert set(verdicts(r).values()) == {"missing"}
    assert "sdpa-flash" in r.cases[0].reason


def test_layout_change_voids_the_entry():
    new = results_doc(BASE)
    for r in new["results"]:
        r["layout_sha"] = "other"
    assert set(verdicts(compare(results_doc(BASE), new)).values()) == {"missing"}


def test_noisy_baseline_widens_its_own_tolerance_and_entries_can_pin_one():
    noisy_base = results_doc(BASE, spread=0.16)  # p20-p80 spans 16% of both timings
    r = compare(noisy_base, results_doc(dict(BASE, sparse=BASE["sparse"] * 1.15)))
    case = next(c for c in r.cases if c.case_id.endswith("/sparse"))
    assert case.tolerance == pytest.approx(2 * (0.08 + 0.08)) and case.verdict == "pass"
    assert verdicts(compare(noisy_base, results_doc(dict(BASE, sparse=BASE["sparse"] * 1.35))))["sparse"] == "regression"
    baseline = make_baseline(results_doc(BASE))
    baseline["gate"]["p/fwd/S4096-B1-H16-D64-bf16/sparse"]["tolerance"] = 0.05
    slow6 = results_doc(dict(BASE, sparse=BASE["sparse"] * 1.06))
    assert verdicts(compare(baseline, slow6))["sparse"] == "regression"


def test_update_baseline_keeps_cases_it_did_not_run():
    old = make_baseline(results_doc(BASE, group="a/fwd/S4096-B1-H16-D64-bf16"))
    new = results_doc(dict(BASE, sparse=0.4), group="b/fwd/S4096-B1-H16-D64-bf16")
    merged = make_baseline(new, old)
    assert set(merged["gate"]) == {f"{g}/S4096-B1-H16-D64-bf16/{p}" for g in ("a/fwd", "b/fwd")
                                   for p in ("sparse", "three-op")}
    assert merged["gate"]["b/fwd/S4096-B1-H16-D64-bf16/sparse"]["ratio"] == pytest.approx(0.4)
    assert len(merged["results"]) == 8
    assert gate_entries(merged) is merged["gate"]
