"""``SparseAttentionUtils``: turn a Hugging Face BERT or RoBERTa into a long-sequence sparse model.

Hugging Face transformers is the optional extra ``hf`` (``pip install '.[hf]'`` in a clone). This
module imports without it; the functions that take an HF model or tokenizer raise an ImportError
naming the extra. Every DeepSpeed bug in these utilities is fixed (docs/deepspeed-differences.md).
"""
from __future__ import annotations

import torch
from torch import nn

from .bert import BertSparseSelfAttention
from .hf_decoder import register_attention  # noqa: F401 (decoders: transformers' attention interface)

_SUPPORTED = ("bert", "roberta")


def _require_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError("SparseAttentionUtils needs Hugging Face transformers: pip install transformers "
                          "(or pip install '.[hf]' in the sparsecli clone)") from err


def _base_model(model):
    """``(base model, position offset)`` of a BERT or RoBERTa model, with or without a head."""
    prefix = getattr(model, "base_model_prefix", None)
    base = getattr(model, prefix, model) if isinstance(prefix, str) else model
    if prefix not in _SUPPORTED or not hasattr(base, "embeddings") or not hasattr(base, "encoder"):
        raise ValueError(f"{type(model).__name__} is not supported: SparseAttentionUtils currently only supports "
                         f'"bert" & "roberta" models (got base_model_prefix={prefix!r})')
    offset = 0
    if prefix == "roberta":  # positions start at padding_idx + 1: 2 reserved rows in standard checkpoints
        padding_idx = getattr(base.embeddings, "padding_idx", 1)
        offset = (padding_idx if padding_idx is not None else 1) + 1
    return base, offset


def _replace_buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    if name in module._buffers:
        module.register_buffer(name, value, persistent=name not in module._non_persistent_buffers_set)


def _round_up(n: int, block: int) -> int:
    return -(-int(n) // block) * block


class SparseAttentionUtils:
    """Static helpers, as in DeepSpeed: extend positions, swap in sparse attention, pad and unpad."""

    @staticmethod
    def extend_position_embedding(model, max_position: int):
        """Give ``model`` a position table for ``max_position`` tokens, tiling the old table.

        BERT: exactly ``max_position`` rows. RoBERTa: ``max_position`` plus its reserved rows
        (2 for standard checkpoints), which are kept as they were. The ``position_ids`` and
        ``token_type_ids`` buffers, ``num_embeddings`` and ``config.max_position_embeddings``
        follow. Returns the model.
        """
        _require_transformers()
        base, offset = _base_model(model)
        old = base.embeddings.position_embeddings
        positions = old.num_embeddings - offset
        max_position = int(max_position)
        if max_position < positions:
            raise ValueError(f"max_position ({max_position}) is smaller than the model's current {positions} "
                             "positions; extend_position_embedding only grows the table")
        rows = max_position + offset
        with torch.no_grad():
            weight = old.weight.new_empty(rows, old.embedding_dim)
            weight[:offset] = old.weight[:offset]
            reps = -(-max_position // positions)
            weight[offset:] = old.weight[offset:].repeat(reps, 1)[:max_position]
        new = nn.Embedding(rows, old.embedding_dim, padding_idx=old.padding_idx,
                           device=weight.device, dtype=weight.dtype)
        new.weight = nn.Parameter(weight, requires_grad=old.weight.requires_grad)
        base.embeddings.position_embeddings = new
        device = weight.device
        _replace_buffer(base.embeddings, "position_ids", torch.arange(rows, device=device).expand((1, -1)))
        _replace_buffer(base.embeddings, "token_type_ids", torch.zeros((1, rows), dtype=torch.long, device=device))
        model.config.max_position_embeddings = rows
        if base.config is not model.config:
            base.config.max_position_embeddings = rows
        return model

    @staticmethod
    def update_tokenizer_model_max_length(tokenizer, max_position: int):
        """Set the tokenizer's ``model_max_length`` (and its saved init kwarg); returns it."""
        _require_transformers()
        tokenizer.model_max_length = max_position
        tokenizer.init_kwargs["model_max_length"] = max_position
        return tokenizer

    @staticmethod
    def replace_model_self_attention_with_sparse_self_attention(model, max_position: int, sparsity_config=None,
                                                                 **kwargs):
        """Swap every encoder layer's self-attention of a BERT/RoBERTa model for the sparse one.

        Layouts are built for ``max_position`` tokens (rounded up to the block). The query, key
        and value weights are shared with the old layers. Position embeddings are left alone:
        call :meth:`extend_position_embedding` for longer inputs. ``kwargs`` (``backend``,
        ``causal``) go to :class:`BertSparseSelfAttention`. Returns the model.
        """
        _require_transformers()
        base, _ = _base_model(model)
        block = sparsity_config.block if sparsity_config is not None else 16
        kwargs.setdefault("max_seq_length", _round_up(max_position, block))
        SparseAttentionUtils.replace_self_attention_layer_with_sparse_self_attention_layer(
            base.config, base.encoder.layer, sparsity_config, **kwargs)
        return model

    @staticmethod
    def replace_self_attention_layer_with_sparse_self_attention_layer(config, layers, sparsity_config=None,
                                                                      **kwargs):
        """Set ``layer.attention.self`` of each layer to a :class:`BertSparseSelfAttention` that reuses
        the layer's query/key/value modules (shared, not copied). Returns ``layers``.

        Each layer builds its own layout from ``sparsity_config`` (random layouts differ per layer)
        and uses it. Default config: ``FixedSparsityConfig(num_heads=config.num_attention_heads)``.
        """
        _require_transformers()
        for layer in layers:
            old = layer.attention.self
            new = BertSparseSelfAttention(config, sparsity_config, **kwargs)
            new.query, new.key, new.value = old.query, old.key, old.value
            new.to(device=old.query.weight.device)
            new.train(old.training)
            layer.attention.self = new
        return layers

    @staticmethod
    def pad_to_block_size(block_size, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                          inputs_embeds=None, pad_token_id=0, model_embeddings=None):
        """Right-pad a batch to a multiple of ``block_size``.

        Returns ``(pad_len, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds)``;
        ``None`` stays ``None``, except ``attention_mask``, which is created when padding is needed
        so that the padded keys are masked. The mask keeps its convention: 0/False for a
        ``(B, L)`` mask or a bool ``(B, 1, 1, L)`` one, the dtype's minimum for an additive
        extended ``(B, 1, 1, L)`` mask. Position ids continue the sequence. ``inputs_embeds`` get
        the word embedding of ``pad_token_id`` from ``model_embeddings`` (the model's embeddings
        module or its word ``nn.Embedding``; zeros without it).
        """
        if input_ids is not None:
            (B, L), ref = input_ids.shape, input_ids
        elif inputs_embeds is not None:
            (B, L), ref = inputs_embeds.shape[:-1], inputs_embeds
        else:
            raise ValueError("pad_to_block_size needs input_ids or inputs_embeds")
        pad_len = (-L) % block_size
        if pad_len == 0:
            return 0, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds
        device = ref.device

        def right_pad(t, value):
            fill = torch.full((*t.shape[:-1], pad_len), value, dtype=t.dtype, device=t.device)
            return torch.cat([t, fill], dim=-1)

        if input_ids is not None:
            input_ids = right_pad(input_ids, pad_token_id)
        if inputs_embeds is not None:
            inputs_embeds = torch.cat([inputs_embeds, _pad_embeddings(model_embeddings, inputs_embeds, pad_len,
                                                                      pad_token_id)], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones(B, L, dtype=torch.long, device=device)
        attention_mask = right_pad(attention_mask, _masked_value(attention_mask))
        if token_type_ids is not None:
            token_type_ids = right_pad(token_type_ids, 0)
        if position_ids is not None:
            step = torch.arange(1, pad_len + 1, dtype=position_ids.dtype, device=position_ids.device)
            position_ids = torch.cat([position_ids, position_ids[..., -1:] + step], dim=-1)
        return pad_len, input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds

    @staticmethod
    def unpad_sequence_output(pad_len: int, sequence_output: torch.Tensor) -> torch.Tensor:
        """Drop the ``pad_len`` positions :meth:`pad_to_block_size` added (dim 1)."""
        if pad_len > 0:
            return sequence_output[:, : sequence_output.shape[1] - pad_len]
        return sequence_output


def _masked_value(mask: torch.Tensor):
    """The value that masks a key in ``mask``'s own convention."""
    extended = mask.dim() == 4 and mask.shape[1] == mask.shape[2] == 1
    if mask.dtype == torch.bool and (mask.dim() == 2 or extended):
        return False
    if mask.dim() == 2:
        return 0
    if extended and mask.is_floating_point():
        return torch.finfo(mask.dtype).min  # additive extended mask
    raise ValueError(f"attention_mask must be (B, L) or an extended (B, 1, 1, L) mask, got {tuple(mask.shape)}")


def _pad_embeddings(model_embeddings, inputs_embeds, pad_len: int, pad_token_id: int) -> torch.Tensor:
    B, _, dim = inputs_embeds.shape
    if model_embeddings is None:
        return inputs_embeds.new_zeros(B, pad_len, dim)
    lookup = getattr(model_embeddings, "word_embeddings", model_embeddings)
    if not isinstance(lookup, nn.Embedding):
        raise ValueError("model_embeddings must be the model's embeddings module (with .word_embeddings) "
                         f"or an nn.Embedding, got {type(model_embeddings).__name__}")
    ids = torch.full((B, pad_len), pad_token_id, dtype=torch.long, device=inputs_embeds.device)
    return lookup(ids).to(inputs_embeds.dtype)
