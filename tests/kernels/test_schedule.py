"""Tile schedules (kernels/lut.py): the programs' tiles and bits cover exactly the layout's tokens.

Pure host code, no kernel: the token mask is rebuilt from the programs' tile lists and compared
with the layout expanded to tokens (cropped to (Sq, Sk), bottom-right causal, transposed for
dK/dV, and for grouped heads one list per key/value head covering its query heads).
"""
from __future__ import annotations

import os

import pytest
import torch

from sparsecli.kernels.lut import tile_schedule, tile_size

_GEN = torch.Generator().manual_seed(int.from_bytes(os.urandom(4), "little"))


def expected_mask(lay, block, sq, sk, causal):
    want = lay.bool().repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :sq, :sk]
    if causal:
        want = want & (torch.arange(sk)[None, :] <= torch.arange(sq)[:, None] + sk - sq)
    return want


def rebuilt_mask(sch, heads, n_out, n_in, outer, group=1, transpose=False):
    """(heads, n_out, group * n_in) token mask the programs visit; asserts the list invariants."""
    got = torch.zeros(heads, sch.num_outer * outer, group * n_in + sch.seg, dtype=torch.bool)
    seg, bits = sch.seg_start.long().view(-1, sch.nseg), sch.tile_bits
    work = []
    for row, tb, tf, te, slot in sch.programs.view(-1, 5).tolist()[:sch.num_programs]:
        h, o = divmod(row, sch.num_outer)
        work.append(te - tb)
        for t in range(tb, te):
            starts = seg[t].tolist()
            if transpose and group > 1:  # one query head per tile
                assert len({s // n_in for s in starts}) == 1
            for g in range(outer // sch.unit):
                for s in range(sch.nseg):
                    if t < tf or (int(bits[t]) >> (g * sch.nseg + s)) & 1:
                        rows = slice(o * outer + g * sch.unit, o * outer + (g + 1) * sch.unit)
                        got[h, rows, starts[s]:starts[s] + sch.seg] = True
    assert work == sorted(work, reverse=True)
    return got[:, :n_out, :group * n_in]


CASES = [  # block, outer, inner, causal, transpose, split, Sq, Sk
    (16, 128, 64, False, False, None, 256, 256), (16, 128, 64, True, True, None, 256, 256),
    (32, 64, 128, True, False, 2, 512, 512), (128, 64, 64, True, False, None, 2048, 2048),
    (64, 128, 128, False, True, 3, 1024, 1024),
    (16, 64, 64, True, False, None, 100, 180), (16, 64, 64, True, True, None, 100, 180),
    (32, 64, 32, True, False, None, 200, 70), (32, 32, 64, True, True, None, 200, 70),
    (64, 16, 64, True, False, 2, 1, 300), (64, 64, 16, True, True, None, 1, 300),
    (16, 16, 64, False, False, None, 5, 64),
]


@pytest.mark.parametrize("block,outer,inner,causal,transpose,split,sq,sk", CASES)
def test_schedule_covers_layout_exactly(block, outer, inner, causal, transpose, split, sq, sk):
    H = 2
    lay = (torch.rand(H, -(-sq // block), -(-sk // block), generator=_GEN) < 0.4).long()
    lay[1, -1] = 1  # a global row: the heaviest program must come first
    sch = tile_schedule(lay, block, outer, inner, causal=causal, transpose=transpose, num_heads=H,
                        split=split, seq_lens=(sq, sk))
    want = expected_mask(lay, block, sq, sk, causal)
    if transpose:
        want = want.transpose(1, 2)
    n_out, n_in = want.shape[1:]
    got = rebuilt_mask(sch, H, n_out, n_in, outer, transpose=transpose)
    if causal:  # the kernel applies the element-level causal test itself
        allowed = expected_mask(torch.ones_like(lay), block, sq, sk, True)
        got &= allowed.transpose(1, 2) if transpose else allowed
    assert torch.equal(got, want)
    slots = [s for s in sch.programs.view(-1, 5)[:sch.num_programs, 4].tolist() if s >= 0]
    assert sorted(slots) == list(range(sch.num_slots))
    # A tile listed as full needs no masking: every token pair in it is attended.
    seg = sch.seg_start.long().view(-1, sch.nseg)
    for row, tb, tf, te, _ in sch.programs.view(-1, 5).tolist()[:sch.num_programs]:
        h, o = divmod(row, sch.num_outer)
        for t in range(tb, tf):
            cols = torch.cat([torch.arange(s, s + sch.seg) for s in seg[t].tolist()])
            assert cols.max() < n_in and o * outer + outer <= sch.num_outer * outer
            rows = torch.arange(o * outer, min(o * outer + outer, n_out))
            assert want[h][rows][:, cols].all()


@pytest.mark.parametrize("per_head,causal,sq,sk", [(True, False, 64, 64), (False, True, 48, 80),
                                                   (True, True, 80, 48)])
def test_grouped_key_lists_cover_every_query_head(per_head, causal, sq, sk):
    """dK/dV of grouped-query attention: key/value head j's lists hold its query heads' lists,
    head g of the group at inner tokens g * Sq + token."""
    Hq, group, block = 4, 2, 16
    lay = (torch.rand(Hq if per_head else 1, -(-sq // block), -(-sk // block), generator=_GEN) < 0.5).long()
    sch = tile_schedule(lay, block, 32, 32, causal=causal, transpose=True, num_heads=Hq // group,
                        seq_lens=(sq, sk), group=group)
    want = expected_mask(lay, block, sq, sk, causal).expand(Hq, sq, sk).transpose(1, 2)  # (Hq, Sk, Sq)
    want = want.reshape(Hq // group, group, sk, sq).permute(0, 2, 1, 3).reshape(Hq // group, sk, group * sq)
    got = rebuilt_mask(sch, Hq // group, sk, sq, 32, group=group, transpose=True)
    if causal:
        tri = expected_mask(torch.ones(1, *lay.shape[1:]), block, sq, sk, True).transpose(1, 2)
        got &= tri.repeat(1, 1, group)
    assert torch.equal(got, want)


def test_global_rows_run_first_and_split():
    lay = torch.eye(16, dtype=torch.long)
    lay[5] = 1  # a global row: 16 tiles where the others have 1
    sch = tile_schedule(lay, 64, 64, 64, causal=False, transpose=False, num_heads=2)
    assert sch.programs.view(-1, 5)[:2, 0].tolist() == [5, 16 + 5]
    sch = tile_schedule(lay, 64, 64, 64, causal=False, transpose=False, num_heads=2, split=4)
    assert sch.num_programs == 2 * (15 + 4) and sch.num_split_rows == 2 and sch.num_slots == 8
    assert sch.combine.view(-1, 3).tolist() == [[5, 0, 4], [21, 4, 4]]


def test_tile_size_shrinks_only_for_short_sequences():
    assert [tile_size(s, 128) for s in (1, 16, 17, 100, 128, 4096, 4100)] == [16, 16, 32, 128, 128, 128, 128]
    assert tile_size(8192, 64) == 64
