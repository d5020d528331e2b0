"""What README.md and docs/ say matches what the repository runs.

Each test holds one statement a new user checked and found wrong: the benchmarked presets' block
size, how to install the Hugging Face extra (sparsecli is not on PyPI), how long the BERT example
takes, and the one shape rule of ``segment_ids`` the signature does not show.
"""
import json
import re
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = DOCS + [*(ROOT / "examples").glob("*.py"), *(ROOT / "sparsecli").rglob("*.py"),
                  *(ROOT / "kernels").rglob("*.py")]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _paragraphs(path: Path) -> list[str]:
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", _text(path))]


def test_the_benchmarked_presets_block_size_is_what_they_run():
    """"These presets use block 16": the presets and every row of the runs behind the tables say 64."""
    claims = [int(b) for doc in DOCS for b in re.findall(r"presets (?:use|run) block (\d+)", " ".join(_text(doc).split()))]
    assert claims, "the benchmark tables no longer say which block the presets use"
    blocks = {yaml.safe_load((ROOT / "presets" / f"{name}.yaml").read_text())["sparsity"]["block"]
              for name in ("fixed", "bigbird")}
    runs = [ROOT / "benchmarks/h200-run/run1.json", *(ROOT / "benchmarks/h100-run").glob("*-run1.json")]
    assert len(runs) >= 2
    for run in runs:
        blocks |= {row["block"] for row in json.loads(run.read_text())["results"]}
    assert set(claims) == blocks and len(blocks) == 1, f"the docs say block {claims}, the presets and runs use {blocks}"


def test_install_commands_name_the_clone_not_pypi():
    """sparsecli is not on PyPI: `pip install sparsecli[hf]` finds nothing (or somebody else's package)."""
    wrong = [f"{p.relative_to(ROOT)}: {m}" for p in SOURCES
             for m in re.findall(r"pip install\s+['\"]?sparsecli\b[^\s`'\"]*", _text(p))]
    assert not wrong, "install from the clone (pip install '.[hf]'): " + "; ".join(wrong)
    readme = _text(ROOT / "README.md")
    assert "pip install '.[hf]'" in readme


def test_the_bert_example_is_described_by_its_measured_time():
    mentions = [(p, para) for p in DOCS + [ROOT / "examples/bert_long_sequence.py"] for para in _paragraphs(p)
                if "bert_long_sequence" in para or p.name == "bert_long_sequence.py"]
    assert any(p.name == "README.md" for p, _ in mentions)
    for path, para in mentions:
        assert not re.search(r"\b(in|takes) seconds\b", para), f"{path.name}: '{para[:120]}...' says 'seconds'"
    readme = " ".join(para for p, para in mentions if p.name == "README.md")
    assert re.search(r"\b\d+ s\b", readme), "the README should give the example's measured time"


def test_segment_ids_shape_rule_is_documented_and_enforced():
    """The signature shows `segment_ids` `(B, S)`; that Sq must equal Sk is a ValueError worth a word."""
    described = [para for doc in DOCS for para in _paragraphs(doc) if "`segment_ids` `(B, S)`" in para]
    assert described, "no doc describes segment_ids' shape"
    assert all(re.search(r"Sq\s*(==|=)\s*Sk", para) for para in described), described

    from sparsecli.kernels import blocksparse_attention

    q = torch.randn(1, 1, 32, 16)
    k = torch.randn(1, 1, 64, 16)
    layout = torch.ones(1, 2, 4, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"Sq == Sk"):
        blocksparse_attention(q, k, k, layout, 16, segment_ids=torch.zeros(1, 32, dtype=torch.int64))
