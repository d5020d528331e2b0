"""Tiny HF decoders and the independent reference the decoder tests compare with.

The reference is an attention implementation of its own: its mask function asks transformers'
``sdpa_mask`` for causality, padding and cache positions (B, 1, Sq, Sk), and ANDs in the layout
as a token mask at the absolute positions transformers gives (``q_offset + i``); its attention
function is float64 masked softmax. It shares nothing with ``sparsecli.modules.hf_decoder``
but the layout tensor. Import after ``pytest.importorskip("transformers")``.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

VOCAB, LAYERS = 96, 2


def tiny_decoder(kind="llama", impl="sdpa", seed=0, heads=4, kv_heads=2, hidden=64, positions=512, **kw):
    """A two-layer random Llama or Qwen2 (GQA, rotary positions), no dropout, eval mode, fp32."""
    config_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if kind == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    config = config_cls(vocab_size=VOCAB, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=LAYERS,
                        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=positions,
                        attention_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        attn_implementation=impl, **kw)
    torch.manual_seed(seed)
    return model_cls(config).eval()


def register_reference(name: str, layouts, block: int):
    """The masked reference under ``name``. ``layouts``: one ``(H or 1, nb, nb)`` tensor, or one per layer."""
    per_layer = [torch.as_tensor(lay).bool() for lay in (layouts if isinstance(layouts, (list, tuple)) else [layouts])]
    heads = max(lay.shape[0] for lay in per_layer)
    stacked = torch.stack([lay.expand(heads, -1, -1) for lay in per_layer])  # (L, H, nb, nb)

    def mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None, attention_mask=None,
             device="cpu", **kwargs):
        base = sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                         kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                         allow_is_causal_skip=False, device=device)
        q_pos = (torch.arange(q_length, device=device) + q_offset) // block
        k_pos = (torch.arange(kv_length, device=device) + kv_offset) // block
        nb = stacked.shape[-1]
        lay = stacked.to(device)[:, :, q_pos.clamp(max=nb - 1)][:, :, :, k_pos.clamp(max=nb - 1)]  # (L, H, Sq, Sk)
        lay = lay & (q_pos < nb)[:, None] & (k_pos < nb)[None, :]
        return (base[:, None] & lay[None]).flatten(1, 2)  # (B, L*H, Sq, Sk): 4-D, passed on as it is

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        B, Hq, Sq, D = query.shape
        layer = getattr(module, "layer_idx", 0) if len(per_layer) > 1 else 0
        keep = attention_mask.unflatten(1, (len(per_layer), heads))[:, layer]  # (B, H, Sq, Sk)
        group = Hq // key.shape[1]
        k = key.double().repeat_interleave(group, 1)
        v = value.double().repeat_interleave(group, 1)
        scores = (query.double() @ k.transpose(-1, -2)) * (D ** -0.5 if scaling is None else scaling)
        scores = scores.masked_fill(~keep, float("-inf"))
        probs = torch.softmax(scores, -1).nan_to_num(0.0)  # a query with nothing to attend: zeros
        out = (probs @ v).to(query.dtype)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, mask)
    return name


def prompts(B=2, L=27, pad=0, seed=1):
    """Token ids and a (B, L) mask; row 1 left-padded by ``pad`` tokens (as generate wants)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    if pad:
        ids[1, :pad] = 0
        mask[1, :pad] = 0
    return ids, mask


def cache_kw(model) -> str:
    """The forward's cache keyword: ``past_key_values`` (transformers <= 5.23) or ``cache`` (5.24+)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def generated(model, ids, mask, new=12, **kw):
    """(new tokens, their logits (B, new, V)) of greedy decoding."""
    out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                         return_dict_in_generate=True, output_logits=True, pad_token_id=0, **kw)
    return out.sequences[:, ids.shape[1]:], torch.stack(out.logits, 1)
