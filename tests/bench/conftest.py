"""Shared fixtures: a tiny preset and synthetic results documents (no GPU, no timing)."""
import pytest

from sparsecli.bench import results as res

TINY = """\
description: tiny bigbird for CPU tests
seed: 1
sparsity:
  mode: bigbird
  num_heads: 2
  block: 32
  num_random_blocks: 1
  num_sliding_window_blocks: 3
  num_global_blocks: 1
bench:
  seq_lens: [128, 256]
  batch: 1
  head_dim: [16, 32]
  dtypes: [fp32]
  passes: [fwd, fwd+bwd]
  providers: [sparse, sdpa-flash, naive]
"""


@pytest.fixture
def tiny_preset(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def row(group="p/fwd/S4096-B1-H16-D64-bf16", provider="sparse", ms=1.0, status="ok", spread=0.01, **kw):
    r = {c: None for c in res.COLUMNS}
    r.update(case_id=f"{group}/{provider}", group_id=group, preset=group.split("/")[0], provider=provider,
             pass_=None, status=status, reason="" if status == "ok" else "boom", layout_sha="abc",
             seq_len=4096, dtype="bf16", head_dim=64, density=0.25)
    r["pass"] = group.split("/")[1]
    if status == "ok":
        r.update(median_ms=ms, p20_ms=ms * (1 - spread / 2), p80_ms=ms * (1 + spread / 2), tflops_nnz=100 / ms)
    r.pop("pass_")
    r.update(kw)
    return r


def results_doc(times: dict, group="p/fwd/S4096-B1-H16-D64-bf16", **row_kw) -> dict:
    """{provider: ms or (status)} -> a results document of one group."""
    rows = []
    for provider, ms in times.items():
        if isinstance(ms, str):
            rows.append(row(group, provider, status=ms))
        else:
            rows.append(row(group, provider, ms, **row_kw))
    env = {"gpu": "Test GPU", "capability": "9.0"}
    return res.document(rows, env, {"presets": ["p"]})
