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


def test_as_layout_identity_and_shared_conversion():
    lay = _layouts(1)[0]
    assert lut.as_layout(lay) is lay  # already 3-D CPU bool: the same object
    ints = lay.long()
    conv = lut.as_layout(ints)
    assert conv.dtype == torch.bool and torch.equal(conv, lay)
    assert lut.as_layout(ints) is conv  # converted once per object and version
    ints[0, 0, 0] = 1 - int(ints[0, 0, 0])
    assert lut.as_layout(ints) is not conv
    flat = lay[0].clone()
    assert lut.as_layout(flat).shape == (1,) + tuple(flat.shape)
    assert lut.as_layout(flat) is lut.as_layout(flat)


def test_converted_layout_freed_with_source():
    for kind in ("2-D bool", "int64"):  # converted by a view and by a copy
        src = _layouts(1)[0][0].clone() if kind == "2-D bool" else _layouts(1)[0].long()
        lid = id(src)
        lut.block_tables(lut.as_layout(src))
        assert lid in lut._STORE
        del src
        gc.collect()
        assert lid not in lut._STORE


def test_three_op_builds_tables_once(monkeypatch):
    """MatMul sdd, dsd and Softmax on one (int64) layout walk it once, at construction; calls
    then read the tables from the op without any lookup."""
    from sparsecli.kernels.threeop import matmul
    from sparsecli.kernels.threeop import softmax

    builds = []
    real = lut._build_tables
    monkeypatch.setattr(lut, "_build_tables", lambda lay, dev: builds.append(dev) or real(lay, dev))
    lay = _layouts(1)[0].long()
    sdd = matmul.MatMul(lay, 16, "sdd", trans_b=True)
    dsd = matmul.MatMul(lay, 16, "dsd")
    sm = softmax.Softmax(lay, 16)
    assert len(builds) == 1
    assert sdd.layout is dsd.layout is sm.layout

    def no_lookup(*a, **k):
        raise AssertionError("per-call table lookup")

    monkeypatch.setattr(matmul, "block_tables", no_lookup)
    monkeypatch.setattr(softmax, "block_tables", no_lookup)
    cpu = torch.device("cpu")
    assert sdd._ops(cpu).l is sdd._luts and dsd._ops(cpu).l is dsd._luts
    assert sm.tables(cpu) is lut.block_tables(sm.layout)
