"""GPU tier: a tiny real sweep through the CLI (every provider, checked, timed) and its gate."""
import json

import pytest
from typer.testing import CliRunner

from sparsecli.cli import app

pytestmark = pytest.mark.gpu


def test_tiny_sweep_runs_every_provider_and_gates_itself(tiny_preset, tmp_path):
    out, base = tmp_path / "r.json", tmp_path / "base.json"
    args = ["bench", "-p", str(tiny_preset), "--seq", "256", "--dtype", "bf16", "--head-dim", "64",
            "--providers", "sparse,three-op,sdpa-flash,sdpa-efficient,sdpa-masked,flex,flex-flash,fa4,naive",
            "--rep-ms", "20", "--warmup-ms", "5", "-o", str(out), "--baseline", str(base), "--update-baseline"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    rows = {x["provider"]: x for x in json.loads(out.read_text())["results"] if x["pass"] == "fwd"}
    for provider in ("sparse", "three-op", "sdpa-flash", "sdpa-masked", "naive"):  # both gated ones included
        assert rows[provider]["status"] == "ok" and rows[provider]["check"] == "passed", rows[provider]
        assert rows[provider]["median_ms"] > 0 and rows[provider]["peak_mem_mib"] >= 0
    for provider in ("flex", "flex-flash", "fa4"):  # checked peers, or FA4 is missing and the row says so
        row = rows[provider]
        assert (row["status"], row["check"]) == ("ok", "passed") or (
            provider != "flex" and row["status"] == "unavailable" and "flash-attn-4" in row["reason"]), row
    assert json.loads(base.read_text())["gate"]


def test_devices_runs_the_real_worker_pinned_to_each_gpu(tiny_preset, tmp_path):
    import torch

    out = tmp_path / "r.json"
    args = ["bench", "-p", str(tiny_preset), "--seq", "256", "--dtype", "bf16", "--head-dim", "64",
            "--providers", "sparse,sdpa-flash", "--rep-ms", "20", "--warmup-ms", "5", "--devices", "all", "-o", str(out)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["env"]["devices"] == list(range(torch.cuda.device_count()))
    assert all(row["status"] == "ok" and row["check"] == "passed" for row in doc["results"]), doc["results"]
    assert all(row["speedup_vs_flash"] for row in doc["results"])
