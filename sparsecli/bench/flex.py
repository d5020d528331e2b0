"""FlexAttention as the bench runs it: compiled once per process, on a pinned backend.

``flex`` is Flex's Triton backend (pinned: with flash-attn-4 installed, a future default could
pick another kernel and the row would measure the wrong thing); ``flex-flash`` is its FLASH
backend (FlashAttention-4 CuTe kernels). Both get their mask from ``sparsecli.to_block_mask``,
which always carries a real ``mask_mod`` (the FLASH backend of torch 2.11 silently computes
dense attention for a mask without one, pytorch#188322).

torch's flex_attention module is imported lazily (it pulls in the compiler stack).
"""
from __future__ import annotations

import functools

import torch

BACKENDS = {"flex": "TRITON", "flex-flash": "FLASH"}


@functools.lru_cache(maxsize=1)
def compiled_flex_attention():
    """``torch.compile(flex_attention)``, built once per process."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def flex_attention_call(q, k, v, block_mask, sm_scale, backend: str):
    """Run the compiled Flex kernel on ``(B, H, S, D)`` tensors with ``backend`` (TRITON or FLASH)."""
    return compiled_flex_attention()(q, k, v, block_mask=block_mask, scale=sm_scale,
                                     kernel_options={"BACKEND": backend})
