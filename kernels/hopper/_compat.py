"""Gluon names that moved between triton 3.6 (the GPU machine) and 3.9 (CPU machines, CI).

Module-level aliases resolve once at import; ``@gluon.jit`` code calls them like the originals.
3.8 renamed the TMA copies (``async_copy_global_to_shared`` -> ``async_load``,
``async_copy_shared_to_global`` -> ``async_store``) and 3.9 keeps the old names only as stubs
that raise, so the new name is looked up first. ``warpgroup_mma``/``warpgroup_mma_wait``,
``fence_async_shared`` and mbarrier init/wait/arrive are the same in 3.6-3.9; ``mbarrier.expect``
renamed its byte-count keyword in 3.7, so it is always called positionally.
"""
from triton.experimental.gluon.language.nvidia.hopper import tma

tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
