"""Preset loading and validation: every problem is one ConfigError naming file, key and fix."""
import pytest
import yaml

from sparsecli.kinds import KINDS
from sparsecli.preset_loader import ConfigError, bundled_names, load_preset, read_preset_text

BUNDLED = ["bigbird", "bslongformer", "dense", "fixed", "sliding_window", "variable"]


def test_every_kind_has_a_bundled_preset():
    assert bundled_names() == BUNDLED
    modes = {load_preset(n).sparsity.mode for n in BUNDLED}
    assert modes == set(KINDS)


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
