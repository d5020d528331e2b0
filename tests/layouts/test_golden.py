"""Layouts and errors against ../shared/golden (produced by DeepSpeed's own sparsity_config.py)."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import sparsecli

HERE = Path(__file__).resolve().parent
# The shared acceptance set beside the checkout wins (it may have grown); the committed copy of
# the public subset keeps the suite self-contained.
GOLDEN = next(p for p in (HERE.parents[2] / "shared" / "golden", HERE / "golden") if (p / "cases.json").is_file())
CASES = json.loads((GOLDEN / "cases.json").read_text())
LAYOUTS = np.load(GOLDEN / "layouts.npz")
# DeepSpeed crashes that we turn into clean errors (README of the golden set).
CRASH_TYPES = {"ZeroDivisionError", "UnboundLocalError", "AttributeError"}


def build(case):
    cls = getattr(sparsecli, case["class"])
    config = cls(**case["kwargs"])
    if case["seed"] is not None:
        random.seed(case["seed"])
    if case["kind"] == "master_layout_crop":
        max_len = case["kwargs"].get("max_seq_length", 2048)
        nb = case["seq_len"] // config.block
        return config.make_layout(max_len)[..., :nb, :nb]
    return config.make_layout(case["seq_len"])


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_golden_case(case):
    if case["result"] == "layout":
        got = build(case)
        want = torch.from_numpy(LAYOUTS[case["id"]].astype(np.int64))
        assert got.dtype == torch.int64
        assert tuple(got.shape) == tuple(case["shape"])
        assert int(got.sum()) == case["nnz"]
        assert torch.equal(got, want)
        return
    err = case["error"]
    expected = ValueError if err["type"] in CRASH_TYPES or "Sample larger" in err["message"] else getattr(__builtins__, err["type"], None) or eval(err["type"])
    cls = getattr(sparsecli, case["class"])
    if err["stage"] == "init":
        with pytest.raises(expected) as info:
            build(case)
    else:
        config = cls(**case["kwargs"])
        with pytest.raises(expected) as info:
            config.make_layout(case["seq_len"])
    if expected is not TypeError:
        # our own words, but they must name the offending values
        numbers = [tok.strip(",!.") for tok in err["message"].split() if tok.strip(",!.").lstrip("-").isdigit()]
        for n in numbers:
            assert n in str(info.value)
