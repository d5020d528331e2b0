"""Preset loading and validation: every problem is one ConfigError naming file, key and fix."""
import random
import subprocess
import sys

import pytest
import torch
import yaml

from sparsecli import CompositeSparsityConfig, StreamingSparsityConfig
from sparsecli.layouts.registry import KINDS
from sparsecli.layouts.presets import ConfigError, bundled_names, load_preset, read_preset_text
from sparsecli.layouts.spec import CompositeSpec

BUNDLED = ["bigbird", "bslongformer", "causal_sliding_window", "dense", "dilated", "document", "fixed",
           "sliding_window", "streaming", "streaming_random", "variable"]


def test_every_kind_has_a_bundled_preset():
    assert bundled_names() == BUNDLED
    modes = {load_preset(n).sparsity.mode for n in BUNDLED}
    assert modes == set(KINDS) | {"union"}


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_presets_build_and_describe_themselves(name):
    p = load_preset(name)
    assert p.description and "\n" not in p.description
    config = p.sparsity.build()
    layout = config.make_layout(p.seq_len)
    assert layout.shape[0] == p.sparsity.num_heads
    assert load_preset(name + ".yaml") == p


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_pasted_deepspeed_block_uses_the_json_parser_defaults(tmp_path):
    p = load_preset(write(tmp_path, "sparsity:\n  mode: bigbird\n  num_heads: 4\n"))
    assert p.sparsity.values["num_random_blocks"] == 0  # DeepSpeed's JSON default, not the class's 1
    assert p.sparsity.values["block"] == 16


@pytest.mark.parametrize(
    "text, key, fragment",
    [
        ("sparsity: [1, 2", None, "not valid YAML"),
        ("", None, "empty"),
        ("- 1\n- 2\n", None, "mapping"),
        ("sparsity:\n  mode: fixed\n  num_heads: 4\n  num_local_blocs: 4\n", "sparsity.num_local_blocs", "did you mean 'num_local_blocks'"),
        ("sparsity:\n  mode: fixed\n  num_heads: four\n", "sparsity.num_heads", "expected int"),
        ("sparsity:\n  mode: fixed\n  num_heads: 4\n  block: true\n", "sparsity.block", "expected int"),
        ("sparsity:\n  mode: bigbrid\n  num_heads: 4\n", "sparsity.mode", "did you mean 'bigbird'"),
        ("sparsity:\n  mode: bigbird\n  num_heads: 4\n  num_local_blocks: 4\n", "sparsity.num_local_blocks", "does not apply"),
        ("sparsity:\n  mode: fixed\n  num_heads: 4\n  num_global_blocks: 3\n", "sparsity", "dividable"),
        ("sparsity:\n  mode: fixed\n", "sparsity.num_heads", "missing"),
        ("bench: {}\n", "sparsity", "missing"),
        ("sparsity:\n  mode: dense\n  num_heads: 4\nbench:\n  seq_lens: [100]\n", "bench.seq_lens", "multiple"),
        ("sparsity:\n  mode: dense\n  num_heads: 4\nbench:\n  dtypes: [fp8]\n", "bench.dtypes", "fp16"),
        ("sparsity:\n  mode: dense\n  num_heads: 4\nbench:\n  providers: [flexx]\n", "bench.providers", "did you mean 'flex'"),
        ("sparsity:\n  mode: dense\n  num_heads: 4\nbench:\n  warmup: 3\n", "bench.warmup", "unknown key"),
        ("sparsity:\n  mode: dense\n  num_heads: 4\nbenchh: {}\n", "benchh", "did you mean 'bench'"),
        ("seq_len: [256]\nsparsity:\n  mode: dense\n  num_heads: 4\n", "seq_len", "one positive integer"),
        ("sparsity:\n  mode: dense\n  num_heads: 4\nbench:\n  batch: [2, 4]\n", "bench.batch", "one positive integer"),
        ("sparsity:\n  mode: dense\n  num_heads: 4\nbench:\n  tokens: 0\n", "bench.tokens", "one positive integer"),
        # YAML keeps the last of two equal keys; a preset names both lines instead
        ("sparsity:\n  mode: fixed\n  num_heads: 4\n  num_heads: 8\n", "sparsity.num_heads", "appears twice (lines 3 and 4)"),
        ("seq_len: 256\nseq_len: 512\nsparsity:\n  mode: dense\n  num_heads: 4\n", "seq_len", "appears twice"),
        ("sparsity:\n  mode: bigbird\n  num_heads: 4\n  num_global_blocks: -2\n", "sparsity", "num_global_blocks must be >= 0"),
        ("sparsity:\n  mode: document\n  num_heads: 4\n", "sparsity.document_lengths", "missing"),
        ("sparsity:\n  mode: document\n  num_heads: 4\n  document_lengths: [100, 0]\n", "sparsity", ">= 1, got 0"),
        ("sparsity:\n  mode: streaming\n  num_heads: 4\n  num_sink_blocks: 0\n", "sparsity", "num_sink_blocks must be >= 1"),
        ("sparsity:\n  mode: dilated\n  num_heads: 4\n  stride: 0\n", "sparsity", "stride must be >= 1"),
        ("sparsity:\n  mode: causal_sliding_window\n  num_heads: 4\n  num_window_blocks: -1\n", "sparsity", "num_window_blocks"),
        ("sparsity:\n  num_heads: 4\n  union: [{mode: streaming}]\n", "sparsity.union", "at least two"),
        ("sparsity:\n  num_heads: 4\n  union: [{mode: streaming}, {mode: dense}]\n  intersection: []\n", "sparsity",
         "either union: or intersection:"),
        ("sparsity:\n  num_heads: 4\n  union: [{mode: streaming}, {mode: dense, block: 32}]\n", "sparsity.block", "disagree"),
        ("sparsity:\n  num_heads: 4\n  union: [{mode: streaming}, {mode: dense, num_heads: 8}]\n", "sparsity.union[1].num_heads",
         "contradicts"),
        ("sparsity:\n  num_heads: 4\n  union: [{mode: streaming, stride: 2}, {mode: dense}]\n", "sparsity.union[0].stride",
         "does not apply"),
        ("sparsity:\n  num_heads: 4\n  mode: dense\n  union: [{mode: streaming}, {mode: dense}]\n", "sparsity.mode",
         "put the other keys in its parts"),
    ],
)
def test_invalid_presets_give_one_line_errors(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    msg = str(info.value)
    assert msg.startswith(path + ": ")
    assert "\n" not in msg
    if key:
        assert f": {key}: " in msg
    assert fragment in msg


def test_missing_preset_names_the_bundled_ones():
    with pytest.raises(ConfigError, match="no such file.*did you mean 'fixed'.*bundled: bigbird"):
        read_preset_text("fixd")


def test_bundled_yaml_is_plain_safe_yaml():
    for name in BUNDLED:
        _, _, text = read_preset_text(name)
        assert isinstance(yaml.safe_load(text), dict)


@pytest.mark.parametrize("where", ["dir", "/dev/null"])
def test_a_directory_or_dev_null_is_not_called_missing(tmp_path, where):
    path = str(tmp_path) if where == "dir" else where
    with pytest.raises(ConfigError) as info:
        load_preset(path)
    msg = str(info.value)
    assert "no such file" not in msg
    assert ("is a directory" if where == "dir" else "the file is empty") in msg


def test_newer_kinds_take_their_class_defaults(tmp_path):
    p = load_preset(write(tmp_path, "sparsity:\n  mode: streaming\n  num_heads: 2\n"))
    assert p.sparsity.values == {"block": 16, "num_sink_blocks": 1, "num_window_blocks": 4}
    assert p.sparsity.given == frozenset()


def test_union_preset_builds_the_union_of_its_parts(tmp_path):
    text = ("seed: 3\nsparsity:\n  num_heads: 2\n  block: 32\n  union:\n"
            "    - {mode: streaming, num_sink_blocks: 1, num_window_blocks: 2}\n"
            "    - {mode: bigbird, num_random_blocks: 2, num_sliding_window_blocks: 1, num_global_blocks: 0,"
            " different_layout_per_head: true}\n")
    p = load_preset(write(tmp_path, text))
    assert isinstance(p.sparsity, CompositeSpec) and p.sparsity.block == 32 and p.sparsity.num_heads == 2
    assert p.sparsity.values["parts"][1]["num_random_blocks"] == 2  # what the bench fingerprints
    config = p.sparsity.build()
    assert isinstance(config, CompositeSparsityConfig) and config.label == "union(streaming, bigbird)"
    random.seed(3)
    got = config.make_layout(640)
    random.seed(3)
    want = StreamingSparsityConfig(2, 32, 1, 2).make_layout(640) | config.parts[1].make_layout(640)
    assert torch.equal(got, want)


def test_intersection_keeps_only_common_blocks(tmp_path):
    text = ("sparsity:\n  num_heads: 1\n  intersection:\n    - {mode: dilated, num_local_blocks: 1, stride: 2}\n"
            "    - {mode: causal_sliding_window, num_window_blocks: 5}\n")
    config = load_preset(write(tmp_path, text)).sparsity.build()
    lay = config.make_layout(16 * 9)[0]
    i, j = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    assert torch.equal(lay.bool(), ((i - j) % 2 == 0) & (j <= i) & (i - j < 5))
    assert config.unidirectional  # one causal part makes an intersection causal


def test_listing_presets_imports_no_torch():
    code = ("import sys, io, contextlib\nfrom sparsecli.cli import app\n"
            "for args in (['presets'], ['presets', 'show', 'streaming_random']):\n"
            "    sys.argv = ['sparsecli', *args]\n"
            "    try:\n        app()\n    except SystemExit as e:\n        assert not e.code, e.code\n"
            "print('IMPORTED', sorted(m for m in ('torch', 'pydantic', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "IMPORTED []" in out
