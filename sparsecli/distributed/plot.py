"""A heatmap panel of a context-parallel plan: every non-zero block (any head) coloured by the rank
that computes it, i.e. each query row by the rank holding it, except the remote blocks of spread
rows, which their keys' owners compute. Drawn into an axes of ``sparsecli.analysis.plot``'s figures
(``extra`` panels), pooled like them past ``plot.MAX_PIXELS`` blocks.
"""
from __future__ import annotations

import torch

from ..analysis.plot import ABSENT, pooled_fraction, pooling_factor
from .plan import ContextParallelPlan

MAX_LEGEND = 16  # ranks named in the legend; more share a colour cycle


def computing_rank(plan: ContextParallelPlan) -> torch.Tensor:
    """(nb, nb) long: the rank that computes block (i, j) when it is present."""
    owner = plan.owner
    rank = owner[:, None].expand(plan.num_blocks, plan.num_blocks).clone()
    spread = plan.spread.nonzero().flatten()
    if len(spread):
        lent = owner[None, :] != owner[spread][:, None]  # remote keys of spread rows
        rank[spread] = torch.where(lent, owner[None, :], rank[spread])
    return rank


def rank_colours(world_size: int) -> list[tuple[float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if world_size > 10 else "tab10"]
    return [tuple(cmap(r % cmap.N)[:3]) for r in range(world_size)]


def rank_image(plan: ContextParallelPlan):
    """RGB (pixels, pixels, 3) numpy image of the panel."""
    from matplotlib.colors import to_rgb

    present = plan.layout.amax(0)
    rank = computing_rank(plan)
    k = pooling_factor(plan.num_blocks)
    colours = [torch.tensor(c) for c in rank_colours(plan.world_size)]
    rgb, covered = 0, 0
    for r, colour in enumerate(colours):
        f = pooled_fraction(present & (rank == r), k)
        rgb, covered = rgb + f[..., None] * colour, covered + f
    rgb = rgb + (1 - covered)[..., None] * torch.tensor(to_rgb(ABSENT))
    return rgb.clamp(0, 1).numpy()


def draw_ranks(ax, plan: ContextParallelPlan) -> None:
    """Draw the panel into ``ax`` with a legend naming the ranks (the first ``MAX_LEGEND``)."""
    from matplotlib.patches import Patch

    nb = plan.num_blocks
    ax.imshow(rank_image(plan), interpolation="antialiased", extent=(-0.5, nb - 0.5, nb - 0.5, -0.5))
    shown = min(plan.world_size, MAX_LEGEND)
    handles = [Patch(color=c, label=f"rank {r}") for r, c in enumerate(rank_colours(plan.world_size)[:shown])]
    ax.legend(handles=handles, fontsize=6, loc="upper right", ncols=2 if shown > 8 else 1, framealpha=0.8)


def rank_panel(plan: ContextParallelPlan, label: str = ""):
    """``(title, draw(ax))`` for ``sparsecli.analysis.plot``'s ``extra`` panels."""
    spread = int(plan.spread.sum())
    title = f"{label}{plan.world_size} ranks, {plan.strategy}: rank computing each block"
    if spread:
        title += f" ({spread} spread rows)"
    return title, lambda ax: draw_ranks(ax, plan)
