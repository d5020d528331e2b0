"""Hopper (sm90) kernels of the block-sparse attention, written in Gluon.

FlashAttention-3's structure on the index tables of ``kernels/lut.py``: a TMA producer warp and
two wgmma consumer warpgroups per program (``_fwd.py``, ``_bwd.py``, shared pieces in
``_common.py``), launched from ``launch.py`` with the portable path's plan; ``support.py`` says
which calls they take (``blocksparse_attention`` routes those here on sm90, see
``kernels/fused/backend.py``). ``variants.py`` lists every compiled variant (CI compiles each for
sm90 on a CPU). Nothing here imports Triton or Gluon until a kernel is launched or compiled.
"""
from .support import CALLS, device_support, gluon_available, supports

__all__ = ["CALLS", "device_support", "gluon_available", "supports"]
