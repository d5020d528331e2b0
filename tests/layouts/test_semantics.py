"""Randomized configurations against the literal oracle, DeepSpeed's crashes as clean errors, and speed."""
import random

import pytest
import torch

from sparsecli import (
    BigBirdSparsityConfig,
    BSLongformerSparsityConfig,
    DenseSparsityConfig,
    FixedSparsityConfig,
    LocalSlidingWindowSparsityConfig,
    SparsityConfig,
    VariableSparsityConfig,
)

from .literal import ORACLES


def _random_config(rng):
    kind = rng.choice(list(ORACLES))
    H = rng.randint(1, 3)
    block = rng.choice([16, 32])
    dlph = rng.random() < 0.5
    att = rng.choice(["unidirectional", "bidirectional"])
    if kind == "fixed":
        ng = rng.choice([1, 2])
        nl = ng * rng.randint(1, 4)
        horiz = att == "bidirectional" and rng.random() < 0.5
        pats = rng.randint(1, nl // ng) if dlph else 1
        return FixedSparsityConfig(H, block, dlph, nl, ng, att, horiz, pats)
    if kind == "variable":
        windows = [rng.randint(1, 5) for _ in range(rng.randint(1, 3))]
        if rng.random() < 0.2:  # an empty window mid-list (negative sizes are ValueErrors)
            windows.insert(rng.randint(0, len(windows) - 1), 0)
        starts = sorted(rng.sample(range(-3, 12), rng.randint(1, 3)))
        ends = [s + rng.randint(1, 3) for s in starts] if rng.random() < 0.5 else None
        horiz = att == "bidirectional" and rng.random() < 0.5
        return VariableSparsityConfig(H, block, dlph, rng.randint(0, 2), windows, starts, ends, att, horiz)
    if kind == "bigbird":
        return BigBirdSparsityConfig(H, block, dlph, rng.randint(0, 1 if att == "unidirectional" else 3),
                                     rng.randint(0, 6), rng.randint(0, 3), att)
    if kind == "bslongformer":
        starts = sorted(rng.sample(range(-3, 12), rng.randint(1, 3)))
        ends = [s + rng.randint(1, 3) for s in starts] if rng.random() < 0.5 else None
        return BSLongformerSparsityConfig(H, block, dlph, rng.randint(0, 6), starts, ends, rng.choice([att, "causal"]))
    return LocalSlidingWindowSparsityConfig(H, block, rng.randint(0, 6), rng.choice([att, "bi"]))


@pytest.mark.parametrize("trial", range(300))
def test_matches_literal_oracle(trial):
    rng = random.Random(trial)
    config = _random_config(rng)
    seq = config.block * rng.randint(1, 14)
    seed = rng.randint(0, 10_000)
    outcome = []
    for build in (config.make_layout, lambda s: ORACLES[config.kind](config, s // config.block)):
        random.seed(seed)
        try:
            outcome.append((build(seq), random.random()))
        except (ValueError, IndexError) as e:  # oracle crashes where we raise ValueError
            outcome.append((type(e), None))
    (ours, our_rng), (lit, lit_rng) = outcome
    if isinstance(lit, type):
        assert ours is ValueError, f"{config} at {seq}: oracle raised {lit.__name__}, we returned a layout"
        return
    assert isinstance(ours, torch.Tensor), f"{config} at {seq}: we raised, the oracle did not"
    assert torch.equal(ours, lit), f"{config} at seq {seq}"
    assert our_rng == lit_rng, "random draws must consume the global RNG exactly as DeepSpeed does"


def test_abstract_base_raises_not_implemented():
    with pytest.raises(NotImplementedError, match="abstract"):
        SparsityConfig(num_heads=4).make_layout(64)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: FixedSparsityConfig(2, num_global_blocks=0), "num_global_blocks"),
        (lambda: VariableSparsityConfig(2, local_window_blocks=[]), "local_window_blocks"),
        (lambda: BigBirdSparsityConfig(2, num_random_blocks=2, attention="unidirectional"), "num_random_blocks=2"),
        (lambda: DenseSparsityConfig(0), "num_heads"),
        (lambda: DenseSparsityConfig(2, block=0), "block"),
        (lambda: DenseSparsityConfig(2).make_layout(-16), "seq_len"),
        (lambda: VariableSparsityConfig(2, local_window_blocks=[4, 0]).make_layout(128), "must not be 0"),
    ],
)
def test_deepspeed_crashes_become_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "make, match",
    [  # DeepSpeed sliced with these: a dense BigBird, no window, windows that wrap or vanish
        (lambda: BigBirdSparsityConfig(2, num_global_blocks=-2), "num_global_blocks must be >= 0, got -2"),
        (lambda: BigBirdSparsityConfig(2, num_sliding_window_blocks=-3), "num_sliding_window_blocks must be >= 0"),
        (lambda: BSLongformerSparsityConfig(2, num_sliding_window_blocks=-1), "num_sliding_window_blocks must be >= 0"),
        (lambda: LocalSlidingWindowSparsityConfig(2, num_sliding_window_blocks=-5), "num_sliding_window_blocks"),
        (lambda: VariableSparsityConfig(2, local_window_blocks=[4, -4]), "local_window_blocks must be >= 0, got -4"),
        (lambda: VariableSparsityConfig(2, local_window_blocks=[-4]), "local_window_blocks must be >= 0, got -4"),
    ],
)
def test_negative_counts_are_value_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("cls", [BSLongformerSparsityConfig, VariableSparsityConfig])
def test_ignored_global_indices_are_named(cls):
    config = cls(2, 16, global_block_indices=[0, 7, 40, 9])
    notes = config.layout_notes(128)  # 8 blocks: 40 and 9 lie past the last one, as DeepSpeed ignores them
    assert len(notes) == 1 and "40, 9 ignored" in notes[0] and "(7)" in notes[0]
    assert cls(2, 16, global_block_indices=[0, 7]).layout_notes(128) == []
    ranges = cls(2, 16, global_block_indices=[2, 9], global_block_end_indices=[12, 10]).layout_notes(128)
    assert any("9 ignored" in n for n in ranges) and any("[2, 12) clipped at block 8" in n for n in ranges)


def test_layout_dtype_shape_and_head_copy():
    layout = FixedSparsityConfig(4, block=16).make_layout(256)
    assert layout.dtype == torch.int64 and layout.shape == (4, 16, 16)
    assert all(torch.equal(layout[0], layout[h]) for h in range(4))
    assert layout[0, 0, 5] == 0
    layout[1, 0, 5] = 1  # heads are real copies, not views of one another
    assert layout[0, 0, 5] == 0
