"""Gluon names that moved between triton 3.6 (the GPU machine) and 3.9 (CPU machines, CI).

Module-level aliases resolve once at import; ``@gluon.jit`` code calls them like the originals.
3.8 renamed the TMA copies (``async_copy_global_to_shared`` -> ``async_load``,
``async_copy_shared_to_global`` -> ``async_store``) and 3.9 keeps the old names only as stubs
that raise, so the new name is looked up first. ``warpgroup_mma``/``warpgroup_mma_wait``,
``fence_async_shared`` and mbarrier init/wait/arrive are the same in 3.6-3.9; ``mbarrier.expect``
renamed its byte-count keyword in 3.7, so it is always called positionally.

``tma_reduce_add(desc, coord, smem)``: a TMA bulk reduce-add of a shared-memory tile into
global memory (``cp.reduce.async.bulk.tensor ... .add``), completed like a TMA store
(``tma.store_wait``). 3.8 wraps it as ``tma.async_atomic_add``; 3.6 and 3.7 have the same IR
op in Gluon's builder (``create_async_tma_reduce``) with no Python wrapper, so a private
builtin emits it there.
"""
from triton.experimental.gluon.language.nvidia.hopper import tma

tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global


def _tma_reduce_add_builtin():
    from triton._C.libtriton import ir
    from triton.experimental.gluon.language._core import builtin

    @builtin
    def tma_reduce_add(tensor_desc, coord, src, _semantic=None):
        coord = _semantic._convert_to_ir_values(coord, require_i64=False)
        _semantic.builder.create_async_tma_reduce(ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord,
                                                  src.handle)

    return tma_reduce_add


tma_reduce_add = getattr(tma, "async_atomic_add", None) or _tma_reduce_add_builtin()


def _smem_reinterpret_builtin():
    from triton.experimental.gluon.language._core import builtin

    @builtin
    def smem_reinterpret(smem, dtype, shape, layout, _semantic=None):
        """``smem`` viewed as another dtype/shape/layout (``_reinterpret`` before 3.9,
        ``reinterpret`` from 3.9)."""
        view = getattr(smem, "reinterpret", None) or smem._reinterpret
        return view(dtype, shape, layout, _semantic=_semantic)

    return smem_reinterpret


smem_reinterpret = _smem_reinterpret_builtin()
