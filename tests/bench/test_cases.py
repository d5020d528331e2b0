"""Sweep expansion, stable case ids, overrides and the FLOP count."""
import pytest

from sparsecli.bench.cases import Overrides, build_layout, expand, flops, layout_figures, shapes
from sparsecli.plumbing.errors import UserError
from sparsecli.layouts.presets import load_preset


def test_bundled_preset_expands_to_the_full_grid():
    p = load_preset("fixed")
    plan = expand([p])
    b = p.bench
    assert len(plan.cases) == len(b.seq_lens) * len(b.dtypes) * len(b.passes) * len(b.head_dims) * len(b.providers)
    first = plan.cases[0]
    assert first.case_id == "fixed/fwd/S4096-B16-H16-D64-bf16/sparse"  # the baseline key: keep it stable
    assert first.shape.batch == b.tokens // 4096
    assert len({c.case_id for c in plan.cases}) == len(plan.cases)


def test_overrides_replace_the_preset(tiny_preset):
    p = load_preset(str(tiny_preset))
    plan = expand([p], Overrides(seq_lens=(64,), dtypes=("bf16",), passes=("bwd",), providers=("flex",),
                                 batch=3, head_dims=(64,)))
    assert [c.case_id for c in plan.cases] == ["tiny/bwd/S64-B3-H2-D64-bf16/flex"]
    assert len(shapes(expand([p]))) == 4  # 2 seqs x 2 head dims


@pytest.mark.parametrize("overrides, match", [
    (Overrides(providers=("sparce",)), "did you mean 'sparse'"),
    (Overrides(dtypes=("fp8",)), "--dtype"),
    (Overrides(passes=("forward",)), "--pass"),
    (Overrides(head_dims=(44,)), "--head-dim 44: the kernels take head dims that are a multiple of 8"),
    (Overrides(seq_lens=(100,)), "multiple of"),
    (Overrides(batch=0), "positive"),
])
def test_bad_overrides_are_one_line_errors(tiny_preset, overrides, match):
    with pytest.raises(UserError, match=match):
        expand([load_preset(str(tiny_preset))], overrides)


def test_flops_count_nonzero_blocks_and_backward_factor(tiny_preset):
    p = load_preset(str(tiny_preset))
    case = expand([p], Overrides(seq_lens=(128,), head_dims=(16,)))
    lay = build_layout(p, 128)
    fig = layout_figures(lay, 32, causal=False)
    assert fig.nnz_blocks == int(lay.sum()) and fig.pairs == fig.nnz_blocks * 32 * 32
    fwd = next(c for c in case.cases if c.pass_ == "fwd")
    both = next(c for c in case.cases if c.pass_ == "fwd+bwd")
    nnz_flops, dense_flops = flops(fwd, fig)
    assert nnz_flops == 4 * 1 * fig.nnz_blocks * 32 * 32 * 16
    assert dense_flops == 4 * 1 * 2 * 128 * 128 * 16
    assert flops(both, fig)[0] == pytest.approx(3.5 * nnz_flops)


def test_causal_counts_the_diagonal_blocks_exactly():
    import torch

    lay = torch.ones(1, 2, 2, dtype=torch.int64)
    fig = layout_figures(lay, 4, causal=True)
    assert fig.pairs == 8 * 9 // 2  # lower triangle of an 8x8 token grid, diagonal included
