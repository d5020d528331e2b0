"""Hopper (sm90) backward of the block-sparse attention, in Gluon.

Deterministic (the default, no atomics): two launches, as in the portable path, each with the
partitions of ``_common.py``:

- dQ (first): a program owns 128 query rows and walks its row's key tiles (the forward's
  unsplit schedule). Per tile: S = Q K^T and dP = dO V^T (async wgmma), P = exp2(S - lse),
  dS = P (dP - Delta), dQ += dS K with dS in registers. It also computes Delta = rowsum(dO * O)
  for its rows (every query row has a program, empty rows too) and writes it for the dK/dV
  launch: no separate pass over O and dO.
- dK/dV (second): a program owns 128 keys (64 per consumer warpgroup, K and V loaded once) and
  walks its column's query tiles of 64 (the transposed schedule). Scores are computed transposed
  (keys x queries: S^T = K Q^T, dP^T = V dO^T), so P^T and dS^T come out of the accumulators
  already shaped as the A operand of dV += P^T dO and dK += dS^T Q: four GEMMs per tile, nothing
  staged through shared memory (FA3's "swapAB").

Grouped-query heads: a dK/dV program owns a K/V head's keys and its list walks every query head
of the group (tokens numbered ``g * SQ + token``, ``lut.tile_schedule``), so dK and dV are the
group's sums with no reduction pass. Every gradient element is summed by one program in a fixed
order. Both kernels are persistent
like the forward (``program_entry``): a CTA's next program loads while it stores the last.

Not deterministic (``DQ_ATOMIC``, FA3's design): one launch of the dK/dV kernel also computes
each tile's dQ contribution, dQ += dS K (dS^T is staged in shared memory and read back
transposed as the A operand), and adds it into an fp32 dQ buffer with a TMA reduce-add: 5 GEMMs
per tile pair instead of 7, but the order in which programs add into a dQ element varies from
run to run. ``_attn_bwd_delta`` computes Delta first (the dQ kernel is not run); the host zeroes
the fp32 buffer and casts it to dQ after.
"""
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma,
                                                              warpgroup_mma, warpgroup_mma_wait)

from ._common import (NEG_INF, causal_keep, load_pair, one_barrier, operand_a_layout,
                      program_entry, ring_barriers, ring_fill, ring_release, ring_wait,
                      store_rows, tile_mask_args, wgmma_layout)
from ._compat import smem_reinterpret


# ---- dQ -----------------------------------------------------------------------------------

@gluon.jit
def _dq_producer(q_desc, do_desc, k_desc, v_desc, q_bufs, do_bufs, k_bufs, v_bufs, q_bar, q_empty,
                 k_ready, k_empty, v_ready, v_empty, programs, seg_start, NUM_PROGS, B, H, GROUP, SQ,
                 SK, NUM_OUTER, STAGES: gl.constexpr):
    c = 0
    j = 0
    for prog in range(gl.program_id(0), NUM_PROGS, gl.num_programs(0)):
        bz, h, o, t0, tf, t1, slot = program_entry(programs, prog, B, NUM_OUTER)
        kv_base = (bz * (H // GROUP) + h // GROUP) * SK
        q_row = (bz * H + h) * SQ + o * 128
        mbarrier.wait(q_empty, (j & 1) ^ 1)
        mbarrier.expect(q_bar, 2 * q_desc.block_type.nbytes + 2 * do_desc.block_type.nbytes)
        load_pair(q_desc, q_bufs, 0, q_row, q_bar)
        load_pair(do_desc, do_bufs, 0, q_row, q_bar)
        for t in range(t0, t1):
            row = kv_base + gl.load(seg_start + t)
            ring_fill(k_desc, k_bufs, k_ready, k_empty, c, row, STAGES)
            ring_fill(v_desc, v_bufs, v_ready, v_empty, c, row, STAGES)
            c += 1
        j += 1


@gluon.jit
def _dq_consumer(dq_desc, q_bufs, do_bufs, dq_bufs, k_bufs, v_bufs, q_bar, q_empty, k_ready, k_empty,
                 v_ready, v_empty, programs, seg_start, NUM_PROGS, B, H, SQ, SK, NUM_OUTER, Out, LSE,
                 Delta, DLSE, qk_scale, sm_scale, WG: gl.constexpr, HEAD_DIM: gl.constexpr,
                 BLOCK_N: gl.constexpr, STAGES: gl.constexpr, CAUSAL: gl.constexpr,
                 HAS_DLSE: gl.constexpr):
    dtype: gl.constexpr = dq_desc.dtype
    s_layout: gl.constexpr = wgmma_layout(BLOCK_N)
    dq_layout: gl.constexpr = wgmma_layout(HEAD_DIM)
    ds_layout: gl.constexpr = operand_a_layout(HEAD_DIM)
    row_l: gl.constexpr = gl.SliceLayout(1, s_layout)
    q_smem = q_bufs.index(WG)
    do_smem = do_bufs.index(WG)
    rows = gl.arange(0, 64, layout=row_l)
    d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, dq_layout))
    o_rows = gl.arange(0, 64, layout=gl.SliceLayout(1, dq_layout))
    s_zero = gl.zeros([64, BLOCK_N], gl.float32, s_layout)
    c = 0
    j = 0
    for prog in range(gl.program_id(0), NUM_PROGS, gl.num_programs(0)):
        bz, h, o, t0, tf, t1, slot = program_entry(programs, prog, B, NUM_OUTER)
        row0 = (bz * H + h) * SQ + o * 128 + WG * 64
        q0 = o * 128 + WG * 64 + SK - SQ  # bottom-right causal: key j <= i + SK - SQ
        lse = gl.load(LSE + row0 + rows)
        mbarrier.wait(q_bar, j & 1)
        # Delta = rowsum(dO * O) in the dQ accumulator's layout (O from global, dO from smem).
        out = gl.load(Out + (row0 + o_rows[:, None]).to(gl.int64) * HEAD_DIM + d[None, :])
        delta = gl.sum(out.to(gl.float32) * do_smem.load(dq_layout).to(gl.float32), 1)
        if HAS_DLSE:  # d lse / d s = p: the lse gradient joins dS as -dLSE in Delta
            delta -= gl.load(DLSE + row0 + o_rows)
        gl.store(Delta + row0 + o_rows, delta)
        delta = gl.convert_layout(delta, row_l)

        dq = gl.zeros([64, HEAD_DIM], gl.float32, dq_layout)
        for i in range(0, t1 - t0):
            s = (c + i) % STAGES
            ring_wait(k_ready, c + i, STAGES)
            s_tok = warpgroup_mma(q_smem, k_bufs.index(s).permute((1, 0)), s_zero, use_acc=False,
                                  is_async=True)
            ring_wait(v_ready, c + i, STAGES)
            dp_tok = warpgroup_mma(do_smem, v_bufs.index(s).permute((1, 0)), s_zero, use_acc=False,
                                   is_async=True)
            # In-order retirement: S is ready while dP is still on the tensor cores.
            qk = warpgroup_mma_wait(1, deps=(s_tok, q_smem, k_bufs.index(s)))[0]
            if CAUSAL:
                masked, k0 = tile_mask_args(seg_start, t0 + i, tf, CAUSAL)
                cols = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
                qk = gl.where(causal_keep(masked, q0, k0, rows[:, None], cols[None, :]), qk, NEG_INF)
            # lse is +inf for rows that attend to nothing: their probabilities are exactly 0.
            p = gl.exp2(qk * qk_scale - lse[:, None])
            dp = warpgroup_mma_wait(0, deps=(dp_tok, do_smem, v_bufs.index(s)))[0]
            ring_release(v_empty, c + i, STAGES)
            ds = gl.convert_layout((p * (dp - delta[:, None])).to(dtype), ds_layout)
            dq_tok = warpgroup_mma(ds, k_bufs.index(s), dq, is_async=True)
            dq = warpgroup_mma_wait(0, deps=(dq_tok, k_bufs.index(s)))[0]
            ring_release(k_empty, c + i, STAGES)
        mbarrier.arrive(q_empty)  # Q and dO of this program are no longer read
        c += t1 - t0
        j += 1
        store_rows(dq_desc, dq_bufs.index(WG), row0, dq * sm_scale)
    tma.store_wait(0)


@gluon.jit
def _attn_dq_hopper(q_desc, k_desc, v_desc, do_desc, dq_desc, Out, LSE, Delta, DLSE,
                    programs, seg_start, NUM_PROGS, B, H, GROUP, SQ, SK, NUM_OUTER, qk_scale, sm_scale,
                    HEAD_DIM: gl.constexpr, BLOCK_N: gl.constexpr, STAGES: gl.constexpr,
                    CAUSAL: gl.constexpr, HAS_DLSE: gl.constexpr):
    dtype: gl.constexpr = q_desc.dtype
    q_bufs = gl.allocate_shared_memory(dtype, [2] + q_desc.block_type.shape, q_desc.layout)
    do_bufs = gl.allocate_shared_memory(dtype, [2] + do_desc.block_type.shape, do_desc.layout)
    dq_bufs = gl.allocate_shared_memory(dtype, [2] + dq_desc.block_type.shape, dq_desc.layout)
    k_bufs = gl.allocate_shared_memory(dtype, [STAGES] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [STAGES] + v_desc.block_type.shape, v_desc.layout)
    q_bar = one_barrier()
    q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(q_empty, count=2)
    k_ready, k_empty = ring_barriers(STAGES)
    v_ready, v_empty = ring_barriers(STAGES)
    fence_async_shared()

    gl.warp_specialize([
        (_dq_consumer, (dq_desc, q_bufs, do_bufs, dq_bufs, k_bufs, v_bufs, q_bar, q_empty, k_ready,
                        k_empty, v_ready, v_empty, programs, seg_start, NUM_PROGS, B, H, SQ, SK, NUM_OUTER,
                        Out, LSE, Delta, DLSE, qk_scale, sm_scale, 0, HEAD_DIM, BLOCK_N, STAGES, CAUSAL,
                        HAS_DLSE)),
        (_dq_consumer, (dq_desc, q_bufs, do_bufs, dq_bufs, k_bufs, v_bufs, q_bar, q_empty, k_ready,
                        k_empty, v_ready, v_empty, programs, seg_start, NUM_PROGS, B, H, SQ, SK, NUM_OUTER,
                        Out, LSE, Delta, DLSE, qk_scale, sm_scale, 1, HEAD_DIM, BLOCK_N, STAGES, CAUSAL,
                        HAS_DLSE)),
        (_dq_producer, (q_desc, do_desc, k_desc, v_desc, q_bufs, do_bufs, k_bufs, v_bufs, q_bar,
                        q_empty, k_ready, k_empty, v_ready, v_empty, programs, seg_start, NUM_PROGS,
                        B, H, GROUP, SQ, SK, NUM_OUTER, STAGES)),
    ], [4, 1], [240, 24])


# ---- dK / dV ------------------------------------------------------------------------------

@gluon.jit
def _dkdv_producer(k_desc, v_desc, q_desc, do_desc, k_bufs, v_bufs, q_bufs, do_bufs, kv_bar,
                   kv_empty, q_ready, q_empty, do_ready, do_empty, programs, seg_start, NUM_PROGS,
                   B, H, GROUP, SQ, SK, NUM_OUTER, STAGES: gl.constexpr):
    c = 0
    j = 0
    for prog in range(gl.program_id(0), NUM_PROGS, gl.num_programs(0)):
        bz, h, o, t0, tf, t1, slot = program_entry(programs, prog, B, NUM_OUTER)  # h: K/V head
        kv_base = (bz * (H // GROUP) + h) * SK
        q_base = (bz * H + h * GROUP) * SQ  # the group's first query head; lists add g * SQ
        mbarrier.wait(kv_empty, (j & 1) ^ 1)
        mbarrier.expect(kv_bar, 2 * k_desc.block_type.nbytes + 2 * v_desc.block_type.nbytes)
        load_pair(k_desc, k_bufs, 0, kv_base + o * 128, kv_bar)
        load_pair(v_desc, v_bufs, 0, kv_base + o * 128, kv_bar)
        for t in range(t0, t1):
            row = q_base + gl.load(seg_start + t)
            ring_fill(q_desc, q_bufs, q_ready, q_empty, c, row, STAGES)
            ring_fill(do_desc, do_bufs, do_ready, do_empty, c, row, STAGES)
            c += 1
        j += 1


@gluon.jit
def _dkdv_consumer(dk_desc, dv_desc, dq_desc, k_bufs, v_bufs, q_bufs, do_bufs, out_bufs, ds_bufs, kv_bar,
                   kv_empty, q_ready, q_empty, do_ready, do_empty, programs, seg_start, NUM_PROGS, B, H,
                   GROUP, SQ, SK, NUM_OUTER, LSE, Delta, qk_scale, sm_scale, WG: gl.constexpr,
                   HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr,
                   CAUSAL: gl.constexpr, DQ_ATOMIC: gl.constexpr):
    dtype: gl.constexpr = dk_desc.dtype
    st_layout: gl.constexpr = wgmma_layout(BLOCK_M)  # keys x queries
    acc_layout: gl.constexpr = wgmma_layout(HEAD_DIM)
    a_layout: gl.constexpr = operand_a_layout(HEAD_DIM)
    k_smem = k_bufs.index(WG)
    v_smem = v_bufs.index(WG)
    if DQ_ATOMIC:
        # out_bufs holds the fp32 dQ staging tiles; dK and dV go out through the same bytes at
        # the end of a program (shared memory has no room for a third pair of tiles at D128).
        ds_smem = ds_bufs.index(WG)
        dq_smem = out_bufs.index(WG)
        out_smem = smem_reinterpret(dq_smem, dtype, dk_desc.block_type.shape, dk_desc.layout)
        dq_zero = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, acc_layout)
    else:
        out_smem = out_bufs.index(WG)
    cols = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, st_layout))
    rows = gl.arange(0, 64, layout=gl.SliceLayout(1, st_layout))
    st_zero = gl.zeros([64, BLOCK_M], gl.float32, st_layout)
    c = 0
    j = 0
    for prog in range(gl.program_id(0), NUM_PROGS, gl.num_programs(0)):
        bz, h, o, t0, tf, t1, slot = program_entry(programs, prog, B, NUM_OUTER)  # h: K/V head
        kv_base = (bz * (H // GROUP) + h) * SK
        q_base = (bz * H + h * GROUP) * SQ
        k0 = o * 128 + WG * 64
        dk = gl.zeros([64, HEAD_DIM], gl.float32, acc_layout)
        dv = gl.zeros([64, HEAD_DIM], gl.float32, acc_layout)
        mbarrier.wait(kv_bar, j & 1)
        for i in range(0, t1 - t0):
            s = (c + i) % STAGES
            q_first = gl.load(seg_start + t0 + i)
            lse = gl.load(LSE + q_base + q_first + cols)
            delta = gl.load(Delta + q_base + q_first + cols)
            ring_wait(q_ready, c + i, STAGES)
            st_tok = warpgroup_mma(k_smem, q_bufs.index(s).permute((1, 0)), st_zero, use_acc=False,
                                   is_async=True)
            ring_wait(do_ready, c + i, STAGES)
            dpt_tok = warpgroup_mma(v_smem, do_bufs.index(s).permute((1, 0)), st_zero, use_acc=False,
                                    is_async=True)
            st = warpgroup_mma_wait(1, deps=(st_tok, k_smem, q_bufs.index(s)))[0]
            if CAUSAL:
                masked = (t0 + i >= tf).to(gl.int32)
                # q_first = g * SQ + token (grouped lists); shifted for bottom-right alignment.
                q_pos = q_first % SQ + SK - SQ
                st = gl.where(causal_keep(masked, q_pos, k0, cols[None, :], rows[:, None]), st, NEG_INF)
            # lse is +inf for queries that attend to nothing: their probabilities are exactly 0.
            pt = gl.exp2(st * qk_scale - lse[None, :])
            dv_tok = warpgroup_mma(gl.convert_layout(pt.to(dtype), a_layout), do_bufs.index(s), dv,
                                   is_async=True)
            dpt = warpgroup_mma_wait(1, deps=(dpt_tok, v_smem, do_bufs.index(s)))[0]
            ds_t = (pt * (dpt - delta[None, :])).to(dtype)
            dk_tok = warpgroup_mma(gl.convert_layout(ds_t, a_layout), q_bufs.index(s), dk, is_async=True)
            if DQ_ATOMIC:
                ds_smem.store(ds_t)
                fence_async_shared()
            dv = warpgroup_mma_wait(1, deps=(dv_tok, do_bufs.index(s)))[0]
            ring_release(do_empty, c + i, STAGES)
            dk = warpgroup_mma_wait(0, deps=(dk_tok, q_bufs.index(s)))[0]
            ring_release(q_empty, c + i, STAGES)
            if DQ_ATOMIC:
                # This warpgroup's 64 keys' share of dQ for the tile's queries: (dS^T)^T K. Issued
                # after dK retires, so dS's registers are free before dQ's accumulator is live.
                dq_tok = warpgroup_mma(ds_smem.permute((1, 0)), k_smem, dq_zero, use_acc=False, is_async=True)
                dq = warpgroup_mma_wait(0, deps=(dq_tok, ds_smem, k_smem))[0]
                store_rows(dq_desc, dq_smem, q_base + q_first, dq * sm_scale, REDUCE=True)
        mbarrier.arrive(kv_empty)  # K and V of this program are no longer read
        c += t1 - t0
        j += 1
        row = kv_base + k0
        store_rows(dk_desc, out_smem, row, dk * sm_scale)
        store_rows(dv_desc, out_smem, row, dv)
    tma.store_wait(0)


@gluon.jit
def _attn_dkdv_hopper(k_desc, v_desc, q_desc, do_desc, dk_desc, dv_desc, dq_desc, LSE, Delta,
                      programs, seg_start, NUM_PROGS, B, H, GROUP, SQ, SK, NUM_OUTER, qk_scale, sm_scale,
                      HEAD_DIM: gl.constexpr, BLOCK_M: gl.constexpr, STAGES: gl.constexpr,
                      CAUSAL: gl.constexpr, DQ_ATOMIC: gl.constexpr):
    """dK, dV (and with ``DQ_ATOMIC`` dQ, reduce-added in fp32 through ``dq_desc``; otherwise
    ``dq_desc`` is not read)."""
    dtype: gl.constexpr = k_desc.dtype
    k_bufs = gl.allocate_shared_memory(dtype, [2] + k_desc.block_type.shape, k_desc.layout)
    v_bufs = gl.allocate_shared_memory(dtype, [2] + v_desc.block_type.shape, v_desc.layout)
    if DQ_ATOMIC:  # fp32 dQ staging (dK/dV's output tiles too) and dS^T, one per warpgroup
        out_bufs = gl.allocate_shared_memory(gl.float32, [2] + dq_desc.block_type.shape, dq_desc.layout)
        ds_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([64, BLOCK_M], dtype)
        ds_bufs = gl.allocate_shared_memory(dtype, [2, 64, BLOCK_M], ds_layout)
    else:
        out_bufs = gl.allocate_shared_memory(dtype, [2] + dk_desc.block_type.shape, dk_desc.layout)
        ds_bufs = out_bufs  # not used
    q_bufs = gl.allocate_shared_memory(dtype, [STAGES] + q_desc.block_type.shape, q_desc.layout)
    do_bufs = gl.allocate_shared_memory(dtype, [STAGES] + do_desc.block_type.shape, do_desc.layout)
    kv_bar = one_barrier()
    kv_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_empty, count=2)
    q_ready, q_empty = ring_barriers(STAGES)
    do_ready, do_empty = ring_barriers(STAGES)
    fence_async_shared()

    gl.warp_specialize([
        (_dkdv_consumer, (dk_desc, dv_desc, dq_desc, k_bufs, v_bufs, q_bufs, do_bufs, out_bufs, ds_bufs,
                          kv_bar, kv_empty, q_ready, q_empty, do_ready, do_empty, programs, seg_start,
                          NUM_PROGS, B, H, GROUP, SQ, SK, NUM_OUTER, LSE, Delta, qk_scale, sm_scale, 0,
                          HEAD_DIM, BLOCK_M, STAGES, CAUSAL, DQ_ATOMIC)),
        (_dkdv_consumer, (dk_desc, dv_desc, dq_desc, k_bufs, v_bufs, q_bufs, do_bufs, out_bufs, ds_bufs,
                          kv_bar, kv_empty, q_ready, q_empty, do_ready, do_empty, programs, seg_start,
                          NUM_PROGS, B, H, GROUP, SQ, SK, NUM_OUTER, LSE, Delta, qk_scale, sm_scale, 1,
                          HEAD_DIM, BLOCK_M, STAGES, CAUSAL, DQ_ATOMIC)),
        (_dkdv_producer, (k_desc, v_desc, q_desc, do_desc, k_bufs, v_bufs, q_bufs, do_bufs, kv_bar,
                          kv_empty, q_ready, q_empty, do_ready, do_empty, programs, seg_start, NUM_PROGS,
                          B, H, GROUP, SQ, SK, NUM_OUTER, STAGES)),
    ], [4, 1], [240, 24])


# ---- Delta for the one-launch backward -----------------------------------------------------

@triton.jit
def _attn_bwd_delta(Out, dO, DLSE, Delta, HEAD_DIM: tl.constexpr, ROWS: tl.constexpr, HAS_DLSE: tl.constexpr):
    """Delta = rowsum(dO * O) (- dLSE) for ``ROWS`` rows of the (B*H*Sq, D) row view, in fp32:
    the dQ kernel computes it on the deterministic path; without that kernel it runs first."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    offs = rows.to(tl.int64)[:, None] * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :]
    delta = tl.sum(tl.load(Out + offs).to(tl.float32) * tl.load(dO + offs).to(tl.float32), 1)
    if HAS_DLSE:
        delta -= tl.load(DLSE + rows)
    tl.store(Delta + rows, delta)
