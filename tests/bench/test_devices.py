"""Multi-GPU sweeps with fake devices: planning, workers pinned per GPU, the merge, a dying GPU."""
import json
import sys
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from sparsecli.bench import devices
from sparsecli.bench.cases import Overrides, expand
from sparsecli.cli import app
from sparsecli.plumbing.errors import UserError
from sparsecli.layouts.presets import load_preset

FAKE_WORKER = [sys.executable, "-m", "tests.bench.fake_worker"]


def tiny_plan(tiny_preset):
    return expand([load_preset(str(tiny_preset))])  # 2 seqs x 2 head dims x 2 passes x 3 providers


@pytest.mark.parametrize("text, count, want", [("all", 3, [0, 1, 2]), ("0,1", 2, [0, 1]), (" 2 , 0", 4, [2, 0])])
def test_devices_parse(text, count, want):
    assert devices.parse_devices(text, count) == want


@pytest.mark.parametrize("text, count, match", [
    ("0,2", 2, "GPU 2 does not exist \\(this host shows 2: 0..1\\)"), ("1,1", 2, "lists GPU 1 twice"),
    ("", 2, "--devices is empty"), ("gpu0", 2, "GPU indices"), ("all", 0, "no CUDA GPU"),
])
def test_bad_devices_are_one_line_errors(text, count, match):
    with pytest.raises(UserError, match=match):
        devices.parse_devices(text, count)


def test_a_worker_is_pinned_to_the_gpu_its_parent_sees(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert devices.pin(1) == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")  # the parent sees physical GPUs 2 and 3 as 0 and 1
    assert devices.pin(0) == "2" and devices.pin(1) == "3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-8a1f,GPU-77c0")
    assert devices.pin(1) == "GPU-77c0"


def test_groups_stay_whole_and_the_load_is_balanced(tiny_preset):
    plan = tiny_plan(tiny_preset)
    dealt = devices.assign(plan, [0, 1])
    assert sorted(c.case_id for cs in dealt.values() for c in cs) == sorted(c.case_id for c in plan.cases)
    for cases in dealt.values():
        assert cases == [c for c in plan.cases if c in cases]  # plan order kept per device
    owner = {c.group_id: d for d, cs in dealt.items() for c in cs}
    assert all(owner[c.group_id] == d for d, cs in dealt.items() for c in cs)  # a group never spans GPUs
    loads = [sum(map(devices.case_cost, cs)) for cs in dealt.values()]
    assert max(loads) <= 0.6 * sum(loads)
    assert list(devices.assign(plan, [0, 1, 2, 3, 4, 5, 6, 7, 8]).values())[-1] == []  # 8 groups, 9 GPUs


def test_bench_devices_merges_every_gpus_rows_and_a_dying_gpu_says_so(tiny_preset, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(devices, "WORKER", FAKE_WORKER)
    monkeypatch.setenv("FAKE_DEAD_GPU", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-0,GPU-1")  # what the workers' pins are made of
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "Fake GPU")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(
        name="Fake GPU", major=9, minor=0, total_memory=80 * 2**30, multi_processor_count=132))
    out = tmp_path / "r.json"
    args = ["bench", "-p", str(tiny_preset), "--devices", "all", "--seq", "128,256", "--head-dim", "16",
            "--pass", "fwd", "--rep-ms", "1", "-o", str(out), "--format", "markdown"]  # 2 groups of 3 providers
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["env"]["gpu"] == "Fake GPU" and doc["env"]["devices"] == [0, 1] and doc["config"]["devices"] == [0, 1]
    plan = expand([load_preset(str(tiny_preset))], Overrides(seq_lens=(128, 256), head_dims=(16,), passes=("fwd",)))
    assert [row["case_id"] for row in doc["results"]] == [c.case_id for c in plan.cases]  # one merged file
    on = devices.assign(plan, [0, 1])
    by_id = {row["case_id"]: row for row in doc["results"]}
    for c in on[0]:  # GPU 0's rows, ratios and speedups all taken on GPU 0
        assert by_id[c.case_id]["status"] == "ok" and by_id[c.case_id]["device"] == 0
        assert by_id[c.case_id]["speedup_vs_flash"] == 1.0 and by_id[c.case_id]["check"] == "passed"
    first, *lost = [by_id[c.case_id] for c in on[1]]
    assert first["status"] == "ok" and first["device"] == 1  # it landed before GPU 1 died
    for row in lost:
        assert row["status"] == "failed" and row["reason"] == (
            "GPU 1: worker exited with code 7: RuntimeError: CUDA error: an illegal memory access was encountered")
    assert "### sparsecli bench · Fake GPU" in r.stdout and "| sparse |" in r.stdout
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: f"Fake GPU {i}")
    r = CliRunner().invoke(app, ["bench", "-p", str(tiny_preset), "--devices", "0,1"])
    assert r.exit_code == 1 and "mixes GPU models (0: Fake GPU 0, 1: Fake GPU 1)" in str(r.exception)
