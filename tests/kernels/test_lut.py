"""Layout cache (kernels/lut.py): values live as long as their layout, with no global cap."""
from __future__ import annotations

import gc

import torch

from sparsecli.kernels import lut


def _layouts(n, H=2, R=4):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        lay = torch.rand(H, R, R, generator=g) > 0.5
        lay[:, :, 0] = True
        out.append(lay)
    return out


def test_many_layouts_stay_cached():
    """30 layouts x 4 keys (120 entries, more than the old global cap of 64) all hit on a second pass."""
    layouts = _layouts(30)
    builds = []

    def builder(i, k):
        def build():
            builds.append((i, k))
            return object()
        return build

    first = {(i, k): lut.cached_per_layout(lay, ("k", k), builder(i, k))
             for i, lay in enumerate(layouts) for k in range(4)}
    assert len(builds) == 120
    for i, lay in enumerate(layouts):
        for k in range(4):
            assert lut.cached_per_layout(lay, ("k", k), builder(i, k)) is first[i, k]
    assert len(builds) == 120  # second pass: no rebuild

    # The real builders too: block tables and tile schedules of every layout are reused.
    tables = [lut.block_tables(lay) for lay in layouts]
    scheds = [lut.tile_schedule(lay, 16, 64, 64, causal=False, transpose=t, num_heads=2)
              for lay in layouts for t in (False, True)]
    assert all(lut.block_tables(lay) is t for lay, t in zip(layouts, tables))
    assert all(lut.tile_schedule(lay, 16, 64, 64, causal=False, transpose=t, num_heads=2) is s
               for (lay, t), s in zip([(lay, t) for lay in layouts for t in (False, True)], scheds))


def test_in_place_edit_invalidates():
    lay = _layouts(1)[0]
    t0 = lut.block_tables(lay)
    assert lut.block_tables(lay) is t0
    lay[0, 1, 1] = not bool(lay[0, 1, 1])
    t1 = lut.block_tables(lay)
    assert t1 is not t0
    assert t1.nnz == int(lay.sum())
    assert lut.block_tables(lay) is t1


def test_entries_freed_with_layout():
    lay = _layouts(1)[0]
    lid = id(lay)
    lut.block_tables(lay)
    assert lid in lut._STORE
    del lay
    gc.collect()
    assert lid not in lut._STORE
