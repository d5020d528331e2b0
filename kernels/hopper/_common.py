"""Gluon pieces shared by the Hopper forward, dQ and dK/dV kernels.

Every kernel runs three partitions: two consumer warpgroups (4 warps each, 64 rows of the
program's outer tile apiece) and a one-warp TMA producer that streams the inner tiles through a
``STAGES``-deep shared-memory ring. Ring slot ``i % STAGES`` of inner tile ``i`` has a "ready"
barrier (count 1: the producer's expect-tx) and an "empty" barrier (count 2: one arrival per
consumer warpgroup) per operand, so each operand is refilled as soon as both warpgroups are done
with it. Gluon lowers an arrive to a barrier over the arriving partition's warps followed by one
thread's arrive, so a count of 1 per warpgroup is exact.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from ._compat import tma_load, tma_reduce_add, tma_store

NEG_INF = gl.constexpr(float("-inf"))


@gluon.constexpr_function
def wgmma_layout(n):
    """Accumulator layout of a 64 x n wgmma on one warpgroup (16-bit operands: k = 16)."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, n, 16])


@gluon.constexpr_function
def operand_a_layout(n):
    """Register layout of a 16-bit A operand feeding a 64 x n wgmma accumulator."""
    return gl.DotOperandLayout(operand_index=0, parent=wgmma_layout(n), k_width=2)


@gluon.jit
def ring_barriers(STAGES: gl.constexpr):
    """(ready, empty) barrier arrays of one ring operand, initialised."""
    ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)  # one arrival per consumer warpgroup
    return ready, empty


@gluon.jit
def one_barrier():
    bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(bar, count=1)
    return bar


@gluon.jit
def load_pair(desc, bufs, first, row, bar):
    """The two 64-row halves of a 128-row outer tile into ``bufs[first]`` and ``bufs[first + 1]``
    (one per consumer warpgroup), on ``bar`` (whose expect-tx the caller has set)."""
    tma_load(desc, [row, 0], bar, bufs.index(first))
    tma_load(desc, [row + 64, 0], bar, bufs.index(first + 1))


@gluon.jit
def ring_fill(desc, bufs, ready, empty, i, row, STAGES: gl.constexpr):
    """Load inner tile ``i`` (rows ``row``...) into its ring slot once both consumers freed it.

    A fresh barrier counts as having completed the phase before phase 0, so the first
    ``STAGES`` waits on "empty" pass at once.
    """
    s = i % STAGES
    mbarrier.wait(empty.index(s), ((i // STAGES) & 1) ^ 1)
    mbarrier.expect(ready.index(s), desc.block_type.nbytes)
    tma_load(desc, [row, 0], ready.index(s), bufs.index(s))


@gluon.jit
def ring_wait(ready, i, STAGES: gl.constexpr):
    mbarrier.wait(ready.index(i % STAGES), (i // STAGES) & 1)


@gluon.jit
def ring_release(empty, i, STAGES: gl.constexpr):
    mbarrier.arrive(empty.index(i % STAGES))


@gluon.jit
def tile_mask_args(seg_start, t, tf, CAUSAL: gl.constexpr):
    """(tile ``t`` is past its list's full tiles, first inner token of the tile).

    At block 128 only causal schedules have such tiles (the diagonal ones); a non-causal launch
    compiles no masking at all.
    """
    masked = 0
    first = 0
    if CAUSAL:
        masked = (t >= tf).to(gl.int32)
        first = gl.load(seg_start + t)
    return masked, first


@gluon.jit
def causal_keep(masked, q_first, k_first, q_idx, k_idx):
    """Keep mask of a tile (broadcastable ``q_idx``/``k_idx`` positions): key <= query, or any
    position of a full tile."""
    return ((k_first + k_idx) <= (q_first + q_idx)) | (masked == 0)


@gluon.jit
def store_rows(desc, smem, row, value, REDUCE: gl.constexpr = False):
    """Store a register tile through ``smem`` (same shape) and one TMA bulk copy, left in
    flight: the caller's next ``store_rows`` on ``smem`` (or its final ``tma.store_wait(0)``)
    waits for it, so the copy overlaps the next program's work. ``REDUCE``: add the tile into
    global memory instead (TMA reduce-add, atomic per element; completes like a store)."""
    tma.store_wait(0)  # the previous copy out of ``smem`` has read it
    smem.store(value.to(desc.dtype))
    fence_async_shared()
    if REDUCE:
        tma_reduce_add(desc, [row, 0], smem)
    else:
        tma_store(desc, [row, 0], smem)


@gluon.jit
def program_entry(programs, prog, B, NUM_OUTER):
    """(batch, head, outer tile, first tile, first masked tile, end tile, partial slot) of
    program ``prog`` of the schedule's table; batch is innermost so the heaviest-first order
    spans every batch element.

    Kernels are persistent: CTA ``c`` of ``G`` takes programs c, c + G, c + 2G, ... of the
    heaviest-first list (G = the number of programs when the host launches one CTA per program).
    """
    entry = programs + (prog // B) * 5
    row = gl.load(entry)
    return (prog % B, row // NUM_OUTER, row % NUM_OUTER, gl.load(entry + 1), gl.load(entry + 2),
            gl.load(entry + 3), gl.load(entry + 4))


@gluon.jit
def turn_wait(turns, g, WG: gl.constexpr, PINGPONG: gl.constexpr):
    """Ping-pong: warpgroup ``WG`` waits for its ``g``-th turn to issue GEMMs (FA3's warp
    scheduler barrier, built from mbarriers: Gluon has no named barriers). While one warpgroup's
    GEMMs run, the other does its softmax."""
    if PINGPONG:
        mbarrier.wait(turns.index(WG), g & 1)


@gluon.jit
def turn_pass(turns, WG: gl.constexpr, PINGPONG: gl.constexpr):
    """Ping-pong: this warpgroup has issued its GEMMs; the other may issue its own."""
    if PINGPONG:
        mbarrier.arrive(turns.index(1 - WG))
