"""Arguments of ``blocksparse_attention``: every bad combination is a ValueError that starts with
the argument's name (and says what to change); any finite real scalar is a valid ``sm_scale``.

Checks run before any kernel or reference, so these tests need neither a GPU nor the interpreter.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsecli.kernels import blocksparse_attention
from sparsecli.kernels.fused.args import check_args
from tests.kernels.oracle import rand


def _call(**override):
    args = dict(q=rand(1, 4, 64, 16), k=rand(1, 2, 64, 16), v=rand(1, 2, 64, 16), layout=torch.ones(4, 4), block=16)
    args.update(override)
    q, k, v, layout, block = (args.pop(n) for n in ("q", "k", "v", "layout", "block"))
    return blocksparse_attention(q, k, v, layout, block, **args)


BAD = [
    (dict(q=rand(2, 64, 16)), "q must be"),
    (dict(q=rand(1, 4, 64, 12), k=rand(1, 2, 64, 12), v=rand(1, 2, 64, 12)), "q head dim .* pad"),
    (dict(q=rand(1, 4, 64, 264), k=rand(1, 2, 64, 264), v=rand(1, 2, 64, 264)), "q head dim .* at most 256"),
    (dict(k=rand(1, 2, 64, 16, dtype=torch.float64)), "k "),
    (dict(v=rand(1, 2, 32, 16)), "v must have k's shape"),
    (dict(k=rand(1, 3, 64, 16), v=rand(1, 3, 64, 16)), "k has 3 heads"),
    (dict(k=rand(2, 2, 64, 16), v=rand(2, 2, 64, 16)), "k must have q's batch"),
    (dict(k=rand(1, 2, 64, 32), v=rand(1, 2, 64, 32)), "k head dim"),
    (dict(q=rand(1, 4, 0, 16)), "q and k must have at least one"),
    (dict(block=8), "block"),
    (dict(block=True), "block"),
    (dict(layout=torch.ones(3, 4, 4)), r"layout must be \(4 or 1, 4, 4\)"),
    (dict(layout=torch.ones(4, 4, 5)), "layout"),
    (dict(layout=torch.full((4, 4), 2)), "layout must hold only 0 and 1"),
    (dict(key_padding_mask=torch.ones(1, 32)), "key_padding_mask"),
    (dict(key_padding_mask=torch.ones(1, 64), key_padding_mask_mode="max"), "key_padding_mask_mode"),
    (dict(attn_mask=torch.ones(64, 32)), "attn_mask"),
    (dict(attn_mask=torch.ones(64, 64), attn_mask_mode="sub"), "attn_mask_mode"),
    (dict(rpe=torch.ones(1, 3, 64, 64)), "rpe"),
    (dict(segment_ids=torch.zeros(1, 64)), "segment_ids must be an integer"),
    (dict(segment_ids=torch.zeros(1, 32, dtype=torch.long)), "segment_ids must have shape"),
    (dict(segment_ids=torch.zeros(1, 64, dtype=torch.bool)), "segment_ids must be an integer"),
    (dict(k=rand(1, 2, 80, 16), v=rand(1, 2, 80, 16), layout=torch.ones(4, 5),
          segment_ids=torch.zeros(1, 64, dtype=torch.long)), r"segment_ids needs .* \(Sq == Sk\)"),
    (dict(sm_scale="x"), "sm_scale"),
    (dict(sm_scale=True), "sm_scale"),
    (dict(sm_scale=float("nan")), "sm_scale must be finite"),
    (dict(sm_scale=torch.ones(2)), "sm_scale must be a real scalar"),
    (dict(sm_scale=1j), "sm_scale"),
]


@pytest.mark.parametrize("override,pattern", BAD)
def test_invalid_arguments_name_the_argument(override, pattern):
    with pytest.raises(ValueError, match="^" + pattern):
        _call(**override)


@pytest.mark.parametrize("scale", [np.float32(0.25), np.float64(0.25), np.int64(2), np.array(0.25),
                                   torch.tensor(0.25), torch.tensor(2), 0.25, 2])
def test_sm_scale_takes_any_real_scalar(scale):
    """numpy scalars (issue 10: np.float32 was rejected), 0-d numpy arrays and 0-d tensors."""
    q, k, v = rand(1, 2, 64, 16), rand(1, 1, 64, 16), rand(1, 1, 64, 16)
    args = check_args(q, k, v, torch.ones(4, 4), 16, False, scale, None, "add", None, "mul", None, None)
    assert type(args.sm_scale) is float and args.sm_scale == float(scale)


def test_rectangular_layout_shapes_accepted():
    """(Hq or 1, ceil(Sq/block), ceil(Sk/block)), also for lengths that are not block multiples."""
    q, k = rand(1, 4, 50, 8), rand(1, 2, 33, 8)
    for lay in (torch.ones(4, 3), torch.ones(1, 4, 3), torch.ones(4, 4, 3)):
        check_args(q, k, k, lay, 16, True, None, torch.ones(1, 33), "mul", torch.ones(50, 33), "mul",
                   torch.zeros(1, 4, 50, 33), None)
    with pytest.raises(ValueError, match="^layout"):
        check_args(q, k, k, torch.ones(4, 4), 16, True, None, None, "add", None, "mul", None, None)
