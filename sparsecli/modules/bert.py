"""``BertSparseSelfAttention``: sparse self-attention as a drop-in for HF BERT/RoBERTa layers.

It replaces ``layer.attention.self`` of Hugging Face BERT and RoBERTa. It takes what their
``BertAttention`` passes — transformers 5.x keywords or 4.x positional arguments — and returns
``(context, None)``: 5.x unpacks two values, 4.x indexes ``[0]`` and forwards the rest. A
key/value cache, under any of its names, is refused (a decoder runs with ``use_cache=False``), and
no other argument is dropped silently: see ``BertSparseSelfAttention._check_call``. No
transformers import is needed: anything with ``hidden_size``, ``num_attention_heads`` (and
optionally ``max_position_embeddings``) works as ``config``, as in DeepSpeed.

Masks arrive in whatever form the model's attention implementation made
(:func:`hf_mask_to_sparse`); lengths that are not a multiple of the block are padded with masked
keys inside the layer and cropped again, so any length runs.
"""
from __future__ import annotations

import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .attention import SparseSelfAttention
from ..kernels.masks import additive_mask
from ..layouts import FixedSparsityConfig

# How each transformers release hands self-attention its arguments (read from BertAttention.forward):
# 4.40-4.53 positionally, in this order, after attention_mask; 4.57 by keyword (past_key_values,
# output_attentions, cache_position); 5.0-5.23 by keyword (past_key_values, cache_position,
# **TransformersKwargs); 5.24+ renames the cache to `cache`.
_LEGACY_ARGS = ("head_mask", "encoder_hidden_states", "encoder_attention_mask", "past_key_value",
                "output_attentions")
# Every name a key/value cache has travelled under.
_CACHE_ARGS = ("cache", "past_key_values", "past_key_value")
# Arguments that would change the result if ignored: an error, never dropped.
_UNSUPPORTED = {
    "head_mask": "head_mask",
    "encoder_hidden_states": "cross-attention (encoder_hidden_states)",
    "encoder_attention_mask": "cross-attention (encoder_attention_mask)",
    "cu_seq_lens_q": "packed sequences (cu_seq_lens_q)",
    "cu_seq_lens_k": "packed sequences (cu_seq_lens_k)",
    "max_length_q": "packed sequences (max_length_q)",
    "max_length_k": "packed sequences (max_length_k)",
    "seq_idx": "packed sequences (seq_idx)",
}
# Arguments transformers passes that cannot change self-attention here: ignored with a one-time warning.
_HARMLESS = {
    "position_ids": "BERT adds positions in its embeddings, before self-attention",
    "cache_position": "it only places new keys in a cache, and there is none",
    "output_hidden_states": "the model collects hidden states itself",
    "output_router_logits": "there is no router",
    "num_items_in_batch": "only the loss uses it",
}
_warned: set[str] = set()


def default_max_seq_length(config, block: int) -> int:
    """DeepSpeed's 2048, or the model's position count rounded up to the block when longer."""
    positions = int(getattr(config, "max_position_embeddings", 0) or 0)
    return max(2048, -(-positions // block) * block)


def hf_mask_to_sparse(mask, B: int, L: int, causal: bool = False):
    """Turn the mask HF hands to self-attention into ``(key_padding_mask, rpe)``.

    - ``None``: no mask.
    - 2-D ``(B, L)``: HF's ``attention_mask`` convention (1/True keep, 0/False pad), as the
      flash-attention implementation passes it -> bool key padding mask.
    - 4-D ``(B, 1|H, 1|L, L)`` equal for every query and head (padding only, what BERT's eager
      and sdpa paths build) -> key padding mask, bool = keep, float = additive (extended mask).
      With ``causal``, only the entries on and below the diagonal must agree (a decoder's mask).
    - any other 4-D mask -> an additive ``rpe`` bias (bool -> 0/-inf); correct but slower, as
      the kernel then reads an L x L bias.
    """
    if mask is None:
        return None, None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"attention_mask must be a tensor or None, got {type(mask).__name__} "
                         "(flex-attention block masks are not supported)")
    if mask.dim() == 2:
        if tuple(mask.shape) != (B, L):
            raise ValueError(f"a 2-D attention_mask must be (B, L) = ({B}, {L}), got {tuple(mask.shape)}")
        return mask != 0, None
    if mask.dim() != 4 or mask.shape[-1] != L or mask.shape[0] not in (1, B) or mask.shape[2] not in (1, L):
        raise ValueError(f"attention_mask must be (B, L) or (B, 1|H, 1|L, L) with B={B}, L={L}, "
                         f"got {tuple(mask.shape)}")
    last = mask[:, :1, -1:, :]  # the last query sees every key, causal or not
    if _padding_only(mask, L, causal, last):
        return last[:, 0, 0, :].expand(B, L), None
    return None, additive_mask(mask, "mul" if mask.dtype == torch.bool else "add", "attention_mask")


# Every layer of a model receives the same mask tensor: the reduction below (an L x L compare and
# a device sync) runs once per forward, not once per layer. One entry, keyed on the tensor itself
# (a weak reference, so the cache keeps nothing alive and a freed tensor's address cannot match)
# and on its version counter, so an in-place edit of the mask is seen.
_last_reduction: tuple | None = None


def _padding_only(mask: torch.Tensor, L: int, causal: bool, last: torch.Tensor) -> bool:
    """Whether the 4-D ``mask`` is the same for every query and head (on/below the diagonal if causal)."""
    global _last_reduction
    try:
        version = mask._version
    except RuntimeError:  # an inference-mode tensor tracks no version: in-place edits go unseen
        version = None
    key = (mask.data_ptr(), version, tuple(mask.shape), tuple(mask.stride()), mask.dtype, mask.device,
           L, bool(causal))
    cached = _last_reduction
    if version is not None and cached is not None and cached[0] == key and cached[1]() is mask:
        return cached[2]
    if mask.shape[2] == 1 or mask.stride(2) == 0:  # broadcast over queries: every row is the last one
        same_heads = mask.shape[1] == 1 or mask.stride(1) == 0
        result = same_heads or bool((mask[:, :, -1:, :] == last).all())
    else:
        same = mask == last
        if causal:
            same = same | torch.ones(L, L, dtype=torch.bool, device=mask.device).triu(1)
        result = bool(same.all())
    try:
        _last_reduction = None if version is None else (key, weakref.ref(mask), result)
    except TypeError:  # a tensor subclass without weak references: just not cached
        _last_reduction = None
    return result


def _pad_keys(kpm, rpe, B: int, L: int, pad: int, device):
    """Extend the masks by ``pad`` masked key positions (and rows, for rpe)."""
    if kpm is None:
        kpm = torch.ones(B, L, dtype=torch.bool, device=device)
    fill = False if kpm.dtype == torch.bool else float("-inf")
    kpm = torch.cat([kpm, torch.full((B, pad), fill, dtype=kpm.dtype, device=kpm.device)], dim=1)
    if rpe is not None:
        rpe = F.pad(rpe, (0, pad, 0, pad), value=float("-inf"))
    return kpm, rpe


class BertSparseSelfAttention(nn.Module):
    """Sparse self-attention for BERT-style layers: query/key/value projections + SparseSelfAttention.

    Args:
        config: a BERT/RoBERTa config (``hidden_size``, ``num_attention_heads``).
        sparsity_config: default ``FixedSparsityConfig(num_heads=config.num_attention_heads)``,
            a fresh one per layer; its ``num_heads`` must equal the model's head count.
        max_seq_length: longest sequence; default max(2048, max_position_embeddings rounded up to
            the block).
        backend, causal: passed to :class:`SparseSelfAttention`; ``causal=None`` is True for a
            decoder (``config.is_decoder``, where HF's attention is causal) and otherwise follows
            the sparsity config.

    Like DeepSpeed's it applies no dropout to the attention probabilities.
    """

    def __init__(self, config, sparsity_config=None, *, max_seq_length=None, backend="fused", causal=None):
        super().__init__()
        heads, hidden = config.num_attention_heads, config.hidden_size
        if hidden % heads != 0:
            raise ValueError(f"The hidden size ({hidden}) is not a multiple of the number of attention heads ({heads})")
        self.num_attention_heads = heads
        self.attention_head_size = hidden // heads
        self.all_head_size = heads * self.attention_head_size
        self.query = nn.Linear(hidden, self.all_head_size)
        self.key = nn.Linear(hidden, self.all_head_size)
        self.value = nn.Linear(hidden, self.all_head_size)
        if sparsity_config is None:
            sparsity_config = FixedSparsityConfig(num_heads=heads)
        if sparsity_config.num_heads != heads:
            raise ValueError(f"sparsity_config.num_heads is {sparsity_config.num_heads} but the model has {heads} "
                             f"attention heads; build the sparsity config with num_heads={heads}")
        if max_seq_length is None:
            max_seq_length = default_max_seq_length(config, sparsity_config.block)
        if causal is None and getattr(config, "is_decoder", False):
            causal = True
        self.sparse_self_attention = SparseSelfAttention(
            sparsity_config, max_seq_length=max_seq_length, backend=backend, causal=causal)

    def transpose_for_scores(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, H*D)`` -> ``(B, H, L, D)``."""
        return x.view(*x.shape[:-1], self.num_attention_heads, self.attention_head_size).transpose(1, 2)

    def forward(self, hidden_states, attention_mask=None, *args, **kwargs):
        """Self-attention of ``(B, L, hidden)``; returns ``(context (B, L, H*D), None)``."""
        cache = self._check_call(args, kwargs)
        if cache is not None:
            return self._forward_with_cache(hidden_states, attention_mask, cache)
        return self._forward(hidden_states, attention_mask)

    def _check_call(self, args: tuple, kwargs: dict):
        """Validate the arguments beyond ``attention_mask``; return the key/value cache, if any.

        Nothing that is not None is dropped silently: arguments that would change the result raise
        a ValueError, known harmless ones warn once per name, unknown ones raise.
        """
        if len(args) > len(_LEGACY_ARGS):
            raise ValueError(f"BertSparseSelfAttention takes at most {len(_LEGACY_ARGS)} positional arguments after "
                             f"attention_mask ({', '.join(_LEGACY_ARGS)}), got {len(args)}")
        given = dict(kwargs)
        for name, value in zip(_LEGACY_ARGS, args):
            if name in given:
                raise ValueError(f"BertSparseSelfAttention got {name} both by position and by keyword")
            given[name] = value
        caches = [given.pop(name) for name in _CACHE_ARGS if name in given]
        cache = next((c for c in caches if c is not None), None)
        if cache is not None:  # where the new keys go in the cache: the cache path's to use
            given.pop("cache_position", None)
        for name, value in given.items():
            if value is None:
                continue
            if name in _UNSUPPORTED:
                raise ValueError(f"BertSparseSelfAttention does not support {_UNSUPPORTED[name]}; call it "
                                 f"with {name}=None")
            if name == "output_attentions":
                if value:
                    raise ValueError("BertSparseSelfAttention cannot return attention probabilities (the fused kernel "
                                     "never forms them): call the model with output_attentions=False")
            elif name == "is_causal":
                if bool(value) != self.sparse_self_attention.causal:
                    raise ValueError(f"is_causal={value} but this layer was built with "
                                     f"causal={self.sparse_self_attention.causal}: build it with causal={bool(value)}")
            elif name not in _HARMLESS:
                raise ValueError(f"BertSparseSelfAttention does not know the argument {name!r} and will not ignore "
                                 "a value that may change the result: pass it as None or leave it out")
        for name in _HARMLESS:  # only once the call is known to be valid
            if name not in _warned and given.get(name) is not None:
                _warned.add(name)
                warnings.warn(f"BertSparseSelfAttention ignores {name}: {_HARMLESS[name]}", stacklevel=2)
        return cache

    def _forward_with_cache(self, hidden_states, attention_mask, cache):
        """Decoding step with a key/value cache (transformers' ``generate``).

        Exact support needs the rectangular, bottom-right-causal kernel (new queries against every
        cached key); until then this is an error rather than attention over the new tokens alone.
        """
        raise ValueError("BertSparseSelfAttention does not support decoding with a key/value cache yet (it needs a "
                         "rectangular, bottom-right-causal sparse kernel): call a decoder with use_cache=False")

    def _forward(self, hidden_states, attention_mask):
        """Attention of every token to every other one the layout and mask allow (no cache)."""
        B, L, _ = hidden_states.shape
        kpm, rpe = hf_mask_to_sparse(attention_mask, B, L, self.sparse_self_attention.causal)
        q, k, v = (self.transpose_for_scores(lin(hidden_states)) for lin in (self.query, self.key, self.value))
        pad = (-L) % self.sparse_self_attention.block
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            kpm, rpe = _pad_keys(kpm, rpe, B, L, pad, hidden_states.device)
        context = self.sparse_self_attention(q, k, v, rpe=rpe, key_padding_mask=kpm)
        context = context[:, :, :L].transpose(1, 2).reshape(B, L, self.all_head_size)
        return context, None
