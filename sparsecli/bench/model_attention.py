"""The attention implementations ``bench --model`` puts in a model besides transformers' own ``sdpa``.

- ``sparse``: ``register_attention`` (the fused block-sparse kernels);
- ``flex``: torch's ``flex_attention`` (Triton backend, compiled once per process) fed the same
  layout through ``to_block_mask``: prefill and training only (a decode step would need a 1 x Sk
  BlockMask per position, which ``to_block_mask`` does not build);
- ``masked``: the reference every row is checked against: transformers' own causal/padding mask
  (``sdpa_mask``) ANDed with the layout as a token mask at the absolute positions transformers
  gives, run by SDPA with that boolean mask. Dense in Sq x Sk: for short check inputs only.
"""
from __future__ import annotations

import torch

FLEX_NAME, MASKED_NAME = "sparsecli-bench-flex", "sparsecli-bench-masked"


def register_masked(layout: torch.Tensor, block: int, name: str = MASKED_NAME) -> str:
    """The masked reference of ``layout`` ((Hl, nb, nb) bool) under ``name``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    lay = layout.bool()

    def mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
             device="cpu", **kwargs):
        base = sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                         kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                         allow_is_causal_skip=False, device=device)
        nb = lay.shape[-1]
        q_blk = (torch.arange(q_length, device=device) + q_offset) // block
        k_blk = (torch.arange(kv_length, device=device) + kv_offset) // block
        tok = lay.to(device)[:, q_blk.clamp(max=nb - 1)][:, :, k_blk.clamp(max=nb - 1)]
        tok = tok & (q_blk < nb)[:, None] & (k_blk < nb)[None, :]
        return base & tok[None]  # (B, Hl, Sq, Sk)

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        group = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(group, 1), value.repeat_interleave(group, 1)
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                               scale=scaling)
        return out.nan_to_num(0.0).transpose(1, 2).contiguous(), None

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, mask)
    return name


def register_flex(layout: torch.Tensor, block: int, name: str = FLEX_NAME) -> str:
    """``flex_attention`` on ``to_block_mask(layout)`` (one BlockMask per sequence length) under ``name``."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from ..modules.flex_mask import to_block_mask
    from .flex import compiled_flex_attention

    masks: dict = {}

    def mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
             **kwargs):
        if attention_mask is not None and not bool(attention_mask.all()):
            raise ValueError("the flex rows take no padding")
        return None

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        S, Sk = query.shape[2], key.shape[2]
        if S != Sk:
            raise ValueError("flex rows run prefill and training only: to_block_mask builds S x S masks, a decode "
                             "step needs a 1 x Sk BlockMask per position")
        key_ = (S, str(query.device), bool(getattr(module, "is_causal", True)))
        if key_ not in masks:
            masks[key_] = to_block_mask(layout, block, S, causal=key_[2], device=query.device)
        out = compiled_flex_attention()(query, key, value, block_mask=masks[key_], scale=scaling, enable_gqa=True,
                                        kernel_options={"BACKEND": "TRITON"})
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, mask)
    return name
