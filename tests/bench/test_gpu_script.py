"""benchmarks/run_gpu.sh end to end on the CPU with the GPU sweep faked (tests/bench/fake_sparsecli.py):
its flags, baseline file, gates, agreement, markdown and summary table, and what it leaves in $OUT."""
import os
import subprocess
import sys
from pathlib import Path

from sparsecli.bench import results as res
from sparsecli.plumbing.output_files import write_text_atomic

from .conftest import row

ROOT = Path(__file__).resolve().parents[2]
PROVIDERS = ("sparse", "three-op", "flex", "flex-flash", "fa4", "sdpa-flash")
MS = {"sparse": 0.9, "three-op": 4.0, "flex": 9.0, "sdpa-flash": 3.5}


def canned_h200_run() -> dict:
    rows = []
    for preset in ("fixed", "bigbird"):
        for pass_ in ("fwd", "fwd+bwd"):
            for seq, batch in ((4096, 16), (16384, 4)):
                group = f"{preset}/{pass_}/S{seq}-B{batch}-H16-D64-bf16"
                for p in PROVIDERS:
                    if p in ("flex-flash", "fa4"):
                        r = row(group, p, status="unavailable", seq_len=seq, batch=batch, heads=16)
                        r["reason"] = "flash-attn-4 not installed"
                    else:
                        r = row(group, p, MS[p] * seq / 4096, seq_len=seq, batch=batch, heads=16)
                    rows.append(r)
    return res.document(rows, {"gpu": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0"}, {"presets": ["fixed", "bigbird"]})


def test_run_gpu_script_with_a_faked_sweep(tmp_path):
    canned = write_text_atomic(tmp_path / "canned.json", res.to_json(canned_h200_run()))
    out, log = tmp_path / "out", tmp_path / "calls.log"
    env = dict(os.environ, OUT=str(out), PY=sys.executable, INSTALL="0", GPU_TESTS="0", FAKE_RESULTS=str(canned),
               FAKE_LOG=str(log), SPARSECLI_CMD=f"{sys.executable} -m tests.bench.fake_sparsecli")
    r = subprocess.run(["bash", "benchmarks/run_gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    calls = log.read_text().splitlines()
    assert calls[0].startswith("bench --preset fixed --preset bigbird --providers "
                               "sparse,three-op,flex,flex-flash,fa4,sdpa-flash --baseline ")
    assert "--update-baseline" in calls[0] and "--update-baseline" not in calls[1]
    lines = r.stdout.splitlines()
    for wanted in ("ok    run 1 in", "ok    run 2 in", "ok    agreement: 32 shared ok cases; worst +0.00%; 0 beyond ±3%: exit 0",
                   "ok    gate vs the H100 baseline refused: error: baseline benchmarks/baselines/nvidia-h100-80gb-hbm3.json "
                   "was measured on NVIDIA H100 80GB HBM3, this run on NVIDIA H200",
                   "ok    run 2 as markdown (summary.md), gated against run 1: exit 0"):
        assert any(line.startswith(wanted) for line in lines), (wanted, r.stdout)
    assert "| case | density | sparse | three-op | sdpa-flash | flex | flex-flash | fa4 | sparse vs sdpa-flash" \
           " | sparse vs fa4 | sparse vs flex-flash |" in r.stdout
    assert "| bigbird fwd+bwd S16384 | 25.0% | 3.6 | 16 | 14 | 36 | unavailable | unavailable | 3.9× | — | — |" in r.stdout
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu-run.tar.gz", "nvidia-h200.json", "run1.json", "run2.json", "summary.md"]  # <= 8 come back
    assert res.load(out / "nvidia-h200.json")["env"]["gpu"] == "NVIDIA H200"
    assert (out / "summary.md").read_text().startswith("### Gate ✅ passed")
