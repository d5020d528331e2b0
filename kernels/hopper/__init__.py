"""Hopper (sm90) kernels of the block-sparse attention, written in Gluon.

FlashAttention-3's structure on the index tables of ``kernels/lut.py``: a TMA producer warp and
two wgmma consumer warpgroups per program (``_fwd.py``, ``_bwd.py``, shared pieces in
``_common.py``), launched from ``launch.py``. ``variants.py`` lists every compiled variant (CI
compiles each for sm90 on a CPU). Nothing here imports Gluon until a kernel is launched.
"""
from .launch import CALLS, attention, backward, device_support, forward, gluon_available, supports, tile_schedules

__all__ = ["CALLS", "attention", "backward", "device_support", "forward", "gluon_available", "supports",
           "tile_schedules"]
