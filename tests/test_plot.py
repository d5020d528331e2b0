"""Heatmaps: pooled pixels are shaded by the fraction of blocks present, titles fit the figure."""
import torch

from sparsecli.analysis.plot import difference_figure, layout_figure, pooled_fraction, pooling_factor


def test_pooled_pixels_show_the_fraction_present():
    nb = 2048 + 3  # pooled 3x3, with a ragged last pixel row and column
    k = pooling_factor(nb)
    assert k == 3
    head = torch.zeros(nb, nb, dtype=torch.bool)
    head[::2, ::2] = True  # 25% dense everywhere
    frac = pooled_fraction(head, k)
    assert frac.shape == (684, 684)
    assert abs(float(frac[:-1, :-1].mean()) - 0.25) < 0.01 and float(frac.max()) < 0.5  # max-pooling said 1.0
    ones = pooled_fraction(torch.ones(nb, nb, dtype=torch.bool), k)
    assert torch.equal(ones, torch.ones_like(ones))  # the ragged edge counts only real blocks


def test_small_layouts_are_drawn_block_for_block():
    head = torch.eye(5, dtype=torch.bool)
    assert torch.equal(pooled_fraction(head, pooling_factor(5)), head.float())


def _title_fits(fig):
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    return box.x0 >= 0 and box.x1 <= fig.bbox.width


def test_a_long_title_fits_a_single_panel():
    lay = torch.ones(1, 2048, 2048, dtype=torch.int64).tril()
    fig = layout_figure(lay, [(0, [0])], "local_sliding_window · seq 32768 · block 16 · density 0.96%")
    assert _title_fits(fig)
    assert "2x2 blocks per pixel" in fig._suptitle.get_text().replace("\n", " ")


def test_difference_panels_mix_colours_by_fraction():
    a = torch.zeros(1, 4, 4, dtype=torch.int64)
    b = torch.zeros(1, 4, 4, dtype=torch.int64)
    a[0, 0, 0] = b[0, 0, 0] = 1  # both
    a[0, 1, 1] = 1  # only A
    b[0, 2, 2] = 1  # only B
    fig = difference_figure(a, b, [(0, [0])], ("A", "B"), "A vs B")
    img = fig.axes[0].images[0].get_array()
    from matplotlib.colors import to_rgb

    from sparsecli.analysis.plot import ABSENT, BOTH, ONLY_A, ONLY_B

    for (i, j), colour in (((0, 0), BOTH), ((1, 1), ONLY_A), ((2, 2), ONLY_B), ((3, 3), ABSENT)):
        assert torch.allclose(torch.tensor(img[i, j]), torch.tensor(to_rgb(colour)).float(), atol=1e-6)
    assert _title_fits(fig)
