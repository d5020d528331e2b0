"""Hopper (sm90) forward of the block-sparse attention, in Gluon: FA3's warp-specialised structure.

One program owns 128 query rows of one (batch, head) and walks its row's key tiles (128 keys
each) from the forward tile schedule (``kernels/lut.py``): the same programs table, heaviest
first, and the same partial-result slots for split rows as the portable Triton kernel, whose
combine kernel merges them.

Partitions (see ``_common.py``): a one-warp producer loads Q once, then K and V of every key
tile into a ring (K and V with separate barriers, so QK^T of a tile starts before its V lands);
two consumer warpgroups own 64 query rows each: async wgmma S = Q K^T (K through a transposed
shared-memory view), online softmax in registers, O += P V with P kept in registers as the A
operand. The warpgroups are separate partitions with separate arrivals, so they drift apart and
one's softmax overlaps the other's GEMMs.

``PIPELINE`` adds FA3's intra-warpgroup overlap: QK^T of tile i+1 is issued together with the PV
of tile i, so the tensor cores work through the softmax's exp2s. ``DEFER_RESCALE`` moves O's
rescale from right after the PV's wait to right before the next PV is issued (FA3's order), so
nothing reads the accumulator between the softmax and the wait (docs/hopper-notes.md, run 5).

Scores are in log2 units (``qk * sm_scale * log2(e)``); lse = m + log2(l) as the Triton path
stores it (+inf for a row with nothing to attend to, so the backward's exp2(s - lse) is 0).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                              warpgroup_mma, warpgroup_mma_wait)

from ._common import (NEG_INF, causal_keep, load_pair, operand_a_layout,
                      program_entry, ring_barriers, ring_fill, ring_release, ring_wait,
                      store_rows, tile_mask_args, turn_pass, turn_wait, wgmma_layout)


@gluon.jit
def _fwd_producer(q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, k_empty,
                  v_ready, v_empty, programs, seg_start, NUM_PROGS, B, H, GROUP, SQ, SK, NUM_OUTER,
                  STAGES: gl.constexpr, Q_BUFS: gl.constexpr):
    c = 0  # key tiles loaded so far by this CTA: ring slot and phase
    j = 0  # programs so far: Q buffer and phase
    for prog in range(gl.program_id(0), NUM_PROGS, gl.num_programs(0)):
        bz, h, o, t0, tf, t1, slot = program_entry(programs, prog, B, NUM_OUTER)
        kv_base = (bz * (H // GROUP) + h // GROUP) * SK  # query head h reads K/V head h // GROUP
        # Q of a program goes into a free Q buffer (both consumers past their last QK^T of the
        # program that used it): with two buffers it loads while the previous program runs.
        qs = j % Q_BUFS
        mbarrier.wait(q_empty.index(qs), ((j // Q_BUFS) & 1) ^ 1)
        mbarrier.expect(q_ready.index(qs), 2 * q_desc.block_type.nbytes)
        load_pair(q_desc, q_bufs, 2 * qs, (bz * H + h) * SQ + o * 128, q_ready.index(qs))
        for t in range(t0, t1):
            row = kv_base + gl.load(seg_start + t)
            ring_fill(k_desc, k_bufs, k_ready, k_empty, c, row, STAGES)
            ring_fill(v_desc, v_bufs, v_ready, v_empty, c, row, STAGES)
            c += 1
        j += 1


@gluon.jit
def _online_softmax(qk, m_i, l_i, qk_scale, masked, q0, k0, CAUSAL: gl.constexpr):
    """One key tile's update: (p, new row max, rescale factor of the old state, new row sum)."""
    if CAUSAL:
        layout: gl.constexpr = qk.type.layout
        rows = gl.arange(0, qk.shape[0], layout=gl.SliceLayout(1, layout))
        cols = gl.arange(0, qk.shape[1], layout=gl.SliceLayout(0, layout))
        qk = gl.where(causal_keep(masked, q0, k0, rows[:, None], cols[None, :]), qk, NEG_INF)
    # max(x) * c = max(x * c) for c > 0 (supports() requires a positive scale): one FMA a score.
    m_new = gl.maximum(m_i, gl.max(qk, 1) * qk_scale)
    m_use = m_new
    if CAUSAL:  # a row can be wholly masked in a tile before its first kept key
        m_use = gl.where(m_new == NEG_INF, 0.0, m_new)
    p = gl.exp2(qk * qk_scale - m_use[:, None])
    alpha = gl.exp2(m_i - m_use)
    return p, m_new, alpha, l_i * alpha + gl.sum(p, 1)


@gluon.jit
def _fwd_consumer(o_desc, q_bufs, o_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, k_empty, v_ready,
                  v_empty, turns, programs, seg_start, LSE, PartAcc, PartML, NUM_SLOTS, NUM_PROGS,
                  B, H, SQ, SK, NUM_OUTER, qk_scale, WG: gl.constexpr, HEAD_DIM: gl.constexpr,
                  BLOCK_N: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                  PIPELINE: gl.constexpr, PINGPONG: gl.constexpr, Q_BUFS: gl.constexpr,
                  DEFER_RESCALE: gl.constexpr):
    dtype: gl.constexpr = o_desc.dtype
    s_layout: gl.constexpr = wgmma_layout(BLOCK_N)
    o_layout: gl.constexpr = wgmma_layout(HEAD_DIM)
    p_layout: gl.constexpr = operand_a_layout(HEAD_DIM)
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    s_zero = gl.zeros([64, BLOCK_N], gl.float32, s_layout)
    rows = gl.arange(0, 64, layout=row_l)
    c = 0  # key tiles consumed so far (ring slot and phase, as in the producer)
    j = 0  # programs so far (Q buffer phase)
    g = 0  # GEMM issue turns taken so far (ping-pong)
    for prog in range(gl.program_id(0), NUM_PROGS, gl.num_programs(0)):
        bz, h, o, t0, tf, t1, slot = program_entry(programs, prog, B, NUM_OUTER)
        q_row = (bz * H + h) * SQ + o * 128 + WG * 64  # this warpgroup's first row
        # Its first query token, shifted for bottom-right causal masks (key j <= i + SK - SQ).
        q0 = o * 128 + WG * 64 + SK - SQ
        m_i = gl.full([64], NEG_INF, gl.float32, row_l)
        l_i = gl.zeros([64], gl.float32, row_l)
        acc = gl.zeros([64, HEAD_DIM], gl.float32, o_layout)
        q_smem = q_bufs.index((j % Q_BUFS) * 2 + WG)
        ring_wait(q_ready, j, Q_BUFS)
        n = t1 - t0
        if PIPELINE:
            if n > 0:
                turn_wait(turns, g, WG, PINGPONG)
                ring_wait(k_ready, c, STAGES)
                s_tok = warpgroup_mma(q_smem, k_bufs.index(c % STAGES).permute((1, 0)), s_zero,
                                      use_acc=False, is_async=True)
                turn_pass(turns, WG, PINGPONG)
                g += 1
                qk = warpgroup_mma_wait(0, deps=(s_tok, q_smem, k_bufs.index(c % STAGES)))[0]
                ring_release(k_empty, c, STAGES)
                masked, k0 = tile_mask_args(seg_start, t0, tf, CAUSAL)
                p, m_i, alpha, l_i = _online_softmax(qk, m_i, l_i, qk_scale, masked, q0, k0, CAUSAL)
                for i in range(1, n):
                    s = (c + i) % STAGES
                    sp = (c + i - 1) % STAGES
                    # QK^T of tile i and PV of tile i-1 go out back to back: the tensor cores
                    # have the PV to work on while this warpgroup waits for S.
                    turn_wait(turns, g, WG, PINGPONG)
                    ring_wait(k_ready, c + i, STAGES)
                    s_tok = warpgroup_mma(q_smem, k_bufs.index(s).permute((1, 0)), s_zero,
                                          use_acc=False, is_async=True)
                    if DEFER_RESCALE:  # FA3's order: O takes tile i-1's rescale just before its PV
                        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
                    ring_wait(v_ready, c + i - 1, STAGES)
                    o_tok = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_bufs.index(sp),
                                          acc, is_async=True)
                    turn_pass(turns, WG, PINGPONG)
                    g += 1
                    # wgmma groups retire in order: one left outstanding = the PV just issued.
                    qk = warpgroup_mma_wait(1, deps=(s_tok, q_smem, k_bufs.index(s)))[0]
                    ring_release(k_empty, c + i, STAGES)
                    masked, k0 = tile_mask_args(seg_start, t0 + i, tf, CAUSAL)
                    p, m_i, alpha, l_i = _online_softmax(qk, m_i, l_i, qk_scale, masked, q0, k0,
                                                         CAUSAL)
                    acc = warpgroup_mma_wait(0, deps=(o_tok, v_bufs.index(sp)))[0]
                    ring_release(v_empty, c + i - 1, STAGES)
                    if not DEFER_RESCALE:
                        acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
                sl = (c + n - 1) % STAGES
                if DEFER_RESCALE:
                    acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
                turn_wait(turns, g, WG, PINGPONG)
                ring_wait(v_ready, c + n - 1, STAGES)
                o_tok = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_bufs.index(sl), acc,
                                      is_async=True)
                turn_pass(turns, WG, PINGPONG)
                g += 1
                acc = warpgroup_mma_wait(0, deps=(o_tok, v_bufs.index(sl)))[0]
                ring_release(v_empty, c + n - 1, STAGES)
        else:
            for i in range(0, n):
                s = (c + i) % STAGES
                ring_wait(k_ready, c + i, STAGES)
                s_tok = warpgroup_mma(q_smem, k_bufs.index(s).permute((1, 0)), s_zero, use_acc=False,
                                      is_async=True)
                qk = warpgroup_mma_wait(0, deps=(s_tok, q_smem, k_bufs.index(s)))[0]
                ring_release(k_empty, c + i, STAGES)
                masked, k0 = tile_mask_args(seg_start, t0 + i, tf, CAUSAL)
                p, m_i, alpha, l_i = _online_softmax(qk, m_i, l_i, qk_scale, masked, q0, k0, CAUSAL)
                acc = acc * gl.convert_layout(alpha, gl.SliceLayout(1, o_layout))[:, None]
                ring_wait(v_ready, c + i, STAGES)
                o_tok = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v_bufs.index(s), acc,
                                      is_async=True)
                acc = warpgroup_mma_wait(0, deps=(o_tok, v_bufs.index(s)))[0]
                ring_release(v_empty, c + i, STAGES)
        # Every QK^T of this program has retired: its Q buffer may take a later program's Q.
        ring_release(q_empty, j, Q_BUFS)
        c += n
        j += 1

        if slot < 0:
            empty = l_i == 0.0
            l_safe = gl.where(empty, 1.0, l_i)
            gl.store(LSE + q_row + rows, gl.where(empty, float("inf"), m_i + gl.log2(l_safe)))
            store_rows(o_desc, o_bufs.index(WG), q_row,
                       acc / gl.convert_layout(l_safe, gl.SliceLayout(1, o_layout))[:, None])
        else:  # one chunk of a split row: its unnormalised state, rows WG*64.. of a 128-row slot
            o_rows = gl.arange(0, 64, layout=gl.SliceLayout(1, o_layout))
            d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
            part = (bz * NUM_SLOTS + slot).to(gl.int64)
            base = part * 128 + WG * 64
            gl.store(PartAcc + (base + o_rows[:, None]) * HEAD_DIM + d[None, :], acc)
            gl.store(PartML + base + part * 128 + rows, m_i)
            gl.store(PartML + base + part * 128 + 128 + rows, l_i)
    tma.store_wait(0)


@gluon.jit
def _attn_fwd_hopper(q_desc, k_desc, v_desc, o_desc, LSE, PartAcc, PartML, NUM_SLOTS,
                     programs, seg_start, NUM_PROGS, B, H, GROUP, SQ, SK, NUM_OUTER, qk_scale,
                     HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                     CAUSAL: gl.constexpr, PIPELINE: gl.constexpr, PINGPONG: gl.constexpr,
                     Q_BUFS: gl.constexpr, DEFER_RESCALE: gl.constexpr):
    """128-query programs over their rows' key tiles; q/k/v/o are TMA descriptors over
    (B*H*SQ, D) and (B*(H/GROUP)*SK, D) rows (64-row blocks for q and o, BLOCK_N for k and v);
    SQ and SK are multiples of 128, so no tile crosses a head. ``NUM_PROGS`` = batch x the
    schedule's programs; the grid may be smaller (persistent CTAs)."""
    dtype: gl.constexpr = q_desc.dtype
    q_bufs = gl.allocate_shared_memory(dtype, [2 * Q_BUFS] + q_desc.block_type.shape, q_desc.layout)
    o_bufs = gl.allocate_shared_memory(dtype, [2] + o_desc.block_type.shape, o_desc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_ready, q_empty = ring_barriers(Q_BUFS)
    k_ready, k_empty = ring_barriers(STAGES)
    v_ready, v_empty = ring_barriers(STAGES)
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    mbarrier.init(turns.index(0), count=1)
    mbarrier.init(turns.index(1), count=1)
    mbarrier.arrive(turns.index(0))  # consumer 0 takes the first turn
    fence_async_shared()  # barrier inits visible to the async proxy (TMA) before first use

    # Argument tuples are written out: concatenating tuples in a jit function drops the
    # constexpr wrappers.
    gl.warp_specialize([
        (_fwd_consumer, (o_desc, q_bufs, o_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, k_empty,
                         v_ready, v_empty, turns, programs, seg_start, LSE, PartAcc, PartML, NUM_SLOTS,
                         NUM_PROGS, B, H, SQ, SK, NUM_OUTER, qk_scale, 0, HEAD_DIM, BLOCK_N, STAGES, CAUSAL,
                         PIPELINE, PINGPONG, Q_BUFS, DEFER_RESCALE)),
        (_fwd_consumer, (o_desc, q_bufs, o_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready, k_empty,
                         v_ready, v_empty, turns, programs, seg_start, LSE, PartAcc, PartML, NUM_SLOTS,
                         NUM_PROGS, B, H, SQ, SK, NUM_OUTER, qk_scale, 1, HEAD_DIM, BLOCK_N, STAGES, CAUSAL,
                         PIPELINE, PINGPONG, Q_BUFS, DEFER_RESCALE)),
        (_fwd_producer, (q_desc, k_desc, v_desc, q_bufs, k_bufs, v_bufs, q_ready, q_empty, k_ready,
                         k_empty, v_ready, v_empty, programs, seg_start, NUM_PROGS, B, H, GROUP, SQ, SK,
                         NUM_OUTER, STAGES, Q_BUFS)),
    ], [4, 1], [240, 24])
