"""bench --model: the plan's checks, and a whole run of a tiny decoder on the CPU (numbers meaningless,
every row's path exercised: checks against the float32 reference, decode modes, training steps)."""
import json

import pytest

from sparsecli.bench import model as mb
from tests.bench.test_cli_bench import via_main

pytest.importorskip("transformers")

TINY_MODEL = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 96, "max_position_embeddings": 4096,
              "tie_word_embeddings": False}
WINDOW = """\
description: a 2-block causal window at block 16
sparsity:
  mode: causal_sliding_window
  num_heads: 4
  block: 16
  num_window_blocks: 2
"""


@pytest.fixture
def tiny(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_MODEL))
    (tmp_path / "window.yaml").write_text(WINDOW)
    return str(tmp_path / "config.json"), str(tmp_path / "window.yaml")


def test_the_bundled_model_is_the_issues_llama_shape():
    name, config = mb.read_config("llama-8l-2048")
    assert name == "llama-8l-2048"
    assert (config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"],
            config["num_attention_heads"], config["num_key_value_heads"]) == (8, 2048, 8192, 16, 4)


def test_a_tiny_run_on_the_cpu(tiny):
    config, layout = tiny
    bench = mb.plan(config, layout, (64,), 1, 96, 2, ("sparse", "sdpa"), mb.MODES, check_len=64, decode_steps=8)
    bench.device, bench.reps = "cpu", 1
    rows = []
    doc = mb.run(bench, rows.append)
    assert doc["results"] == rows and doc["config"]["model_config"]["hidden_size"] == 64
    by_id = {r["case_id"]: r for r in rows}
    for p in ("sparse", "sdpa"):
        check = by_id[f"config/check/S64/{p}"]
        assert check["status"] == "ok" and check["max_rel_err"] <= check["tolerance"]
        assert check["dense_vs_layout_rel_gap"] > check["tolerance"]  # a wrong pattern would fail
        assert by_id[f"config/train/S64/B1/{p}"]["status"] == "ok"
        assert by_id[f"config/decode-eager-static/C96/B2/{p}"]["tokens_per_s"] > 0
        assert by_id[f"config/decode-graph-static/C96/B2/{p}"]["status"] == "unsupported"  # no GPU
    train = by_id["config/train/S64/B1/sparse"]
    assert train["flop_bound"]["ratio"] > 1 and "speedup_vs_sdpa" in train
    assert by_id["config/decode-eager-dynamic/C96/B2/sparse"]["byte_bound"]["ratio"] > 1


@pytest.mark.parametrize("args, match", [
    (["--model", "nope.json"], "not a bundled model"),
    (["--model", "llama-8l-2048", "--seq", "1000"], "whole blocks of the layout's 128 tokens"),
    (["--model", "llama-8l-2048", "--dtype", "bf16"], "--dtype do not apply to --model"),
    (["--context", "4096", "--preset", "fixed"], "add --model CONFIG"),
    (["--model", "llama-8l-2048", "--providers", "sparse,fa4"], "unknown fa4"),
])
def test_errors_are_one_line(monkeypatch, capsys, args, match):
    code, out, err = via_main(monkeypatch, capsys, ["bench", *args])
    assert code == 1 and match in err and len(err.strip().splitlines()) == 1


def test_no_gpu(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = via_main(monkeypatch, capsys, ["bench", "--model", "llama-8l-2048"])
    assert code == 1 and "no CUDA GPU" in err
