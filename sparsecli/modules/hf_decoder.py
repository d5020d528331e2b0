"""Any Hugging Face model on a block layout, through transformers' attention interface.

``register_attention(name, layout, ...)`` registers an attention function
(``AttentionInterface``) and its mask function (``AttentionMaskInterface``) under ``name``;
``from_pretrained(..., attn_implementation=name)`` or ``model.set_attn_implementation(name)``
then runs every attention layer on ``blocksparse_attention``: prefill, generation with a
``DynamicCache`` or a ``StaticCache`` (CUDA graphs included), training, and encoders (BERT,
RoBERTa) that use the interface.

Semantics. With Sk keys and Sq queries, query i sits at absolute position p = Sk - Sq + i
(with a static cache: p = tokens cached before the step + i); it sees key t when
``layout[h, p // block, t // block]`` is set and, for a causal module, t <= p. The layout at a
length Sk is the top-left crop of the one built at ``max_seq_length`` (DeepSpeed's convention).

Query rows that do not start on a block boundary (decode steps, a prefill that is not whole
blocks, a chunk after a cached prefix) still follow their absolute layout rows: when a step's
queries lie in one block row, that row is used as it is; when they span several, the queries
are padded in front with zero rows up to the block boundary (at most block - 1 rows, computed
and dropped). The fused kernel's causal masking is bottom-right aligned, so the padded rows
change nothing for the real ones.

Two paths run a call. Host path: positions known in Python (no cache, a DynamicCache, or an
eager step with a static cache), the kernel gets the exact crop of the layout. Device path: one
query per sequence with a static cache (decode steps, which ``torch.compile`` and CUDA graphs
replay with the position only on the GPU): the keys of the query's layout row are gathered into
a fixed-size buffer (the longest row's blocks) and the kernel runs on that, with the keys past
the position and the row's unused slots masked. Its cost is one copy of the row's keys and
values per layer.

Masks. Causality is read from ``module.is_causal`` (or an ``is_causal`` argument); the mask
function never builds an S x S mask. It returns None when there is nothing to mask, a
``(B, Sk)`` bool key mask for padded keys (a 2-D ``attention_mask``: honoured through the
kernel's ``key_padding_mask``), or, with a static cache, an int8 ``(B, 1, 1, Sk)`` key state
(1 attend, 0 padding, -1 a cache slot not written yet), 4-D so that transformers passes it on
as it is when ``generate`` builds masks ahead of a compiled step. The cache keyword's name
(``past_key_values``, ``cache``) is never read: the function gets keys and values after the
cache update.

Refused by name (ValueError): attention dropout in training, a model's own ``sliding_window``
(put the window in the layout), ``softcap``, attention sinks (``s_aux``, ``sinks``),
``position_bias``, ``head_mask``, ``output_attentions``, mask patterns other than plain causal
or bidirectional (packed sequences, chunked attention, image-token overlays), sliding-window
caches, and 4-D masks made elsewhere.
"""
from __future__ import annotations

import torch

from .hf_layouts import DecodeTables, LayerLayout, build_decode_tables, is_layout_value, layer_layout

# kwargs transformers may hand an attention function that change what attention computes: each is
# refused (when set) rather than ignored.
_REFUSED = {
    "sliding_window": "the model's own sliding window: set config.sliding_window = None and put the window in "
                      "the layout (causal_sliding_window)",
    "softcap": "logit soft-capping is not in the sparse kernel",
    "s_aux": "attention sinks are not in the sparse kernel",
    "sinks": "attention sinks are not in the sparse kernel",
    "position_bias": "an additive position bias is not in the sparse kernel",
    "head_mask": "head masks are not in the sparse kernel",
}


def register_attention(name: str, layout, *, block: int | None = None, max_seq_length: int | None = None):
    """Register ``name`` with transformers: an attention function running ``layout`` and its mask function.

    ``layout``: a ``SparsityConfig`` (built once, here, as ``layout.make_layout(max_seq_length)``;
    ``max_seq_length`` required), a 0/1 tensor ``(Hq or 1, nb, nb)`` (``block`` required), a
    FlexAttention ``BlockMask`` or the path of one saved with ``torch.save`` (its tiles, see
    ``from_block_mask``), or a callable ``layer_idx -> any of these`` for a layout per layer
    (built at the layer's first call). Keys past the layout's length are a ValueError naming
    both lengths. Returns the :class:`SparseAttention` registered (its ``layout_for(i)`` says
    what layer ``i`` runs).
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    owner = AttentionInterface._global_mapping.get(name)
    if owner is not None and not getattr(owner, "_sparsecli", False):
        raise ValueError(f"{name!r} is transformers' own attention implementation; register under another name")
    sparse = SparseAttention(name, layout, block=block, max_seq_length=max_seq_length)
    AttentionInterface.register(name, sparse.attention)
    AttentionMaskInterface.register(name, sparse.mask)
    return sparse


class SparseAttention:
    """The attention and mask functions of one registered layout (see the module docstring)."""

    _sparsecli = True

    def __init__(self, name: str, layout, *, block=None, max_seq_length=None):
        self.name = name
        self._per_layer = callable(layout) and not is_layout_value(layout)
        self._spec, self._block, self._max_seq_length = layout, block, max_seq_length
        self._layers: dict = {}
        if not self._per_layer:
            self._layers[None] = layer_layout(layout, block, max_seq_length, "layout")

        def attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                      **kwargs):
            return self.attend(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                               is_causal=is_causal, **kwargs)

        def mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                 attention_mask=None, **kwargs):
            return self.key_mask(batch_size, q_length, kv_length, q_offset, kv_offset, mask_function,
                                 attention_mask, **kwargs)

        attention._sparsecli = mask._sparsecli = True
        attention.__name__, mask.__name__ = f"sparsecli_{name}_attention", f"sparsecli_{name}_mask"
        self.attention, self.mask = attention, mask

    def layout_for(self, layer_idx) -> LayerLayout:
        """The layout layer ``layer_idx`` runs (built at its first use for a per-layer callable)."""
        if not self._per_layer:
            return self._layers[None]
        hit = self._layers.get(layer_idx)
        if hit is None:
            if layer_idx is None:
                raise ValueError("a per-layer layout needs the attention module's layer_idx, and this module has none")
            spec = self._spec(layer_idx)
            hit = self._layers[layer_idx] = layer_layout(spec, self._block, self._max_seq_length,
                                                         f"layout({layer_idx})")
        return hit

    # -- the mask function ------------------------------------------------------------------------

    def key_mask(self, batch_size, q_length, kv_length, q_offset, kv_offset, mask_function, attention_mask,
                 device=None, **_):
        _check_pattern(mask_function)
        if isinstance(kv_offset, int) and kv_offset != 0 or isinstance(kv_offset, torch.Tensor):
            raise ValueError(f"{self.name}: a sliding-window cache (keys from position {kv_offset}) drops keys the "
                             "layout indexes by position; use a DynamicCache or a StaticCache")
        pad = None
        if attention_mask is not None:
            if attention_mask.dim() != 2:
                raise ValueError(f"{self.name}: attention_mask must be the (batch, keys) padding mask, got shape "
                                 f"{tuple(attention_mask.shape)}")
            pad = attention_mask.to(torch.bool)
            if pad.shape[-1] < kv_length:
                pad = torch.nn.functional.pad(pad, (0, kv_length - pad.shape[-1]))
            pad = pad[:, :kv_length]
            device = pad.device
        static = isinstance(q_offset, torch.Tensor) or q_offset + q_length != kv_length
        if device is None:
            device = q_offset.device if isinstance(q_offset, torch.Tensor) else "cpu"
        if not static:
            if pad is None or (not torch.compiler.is_compiling() and bool(pad.all())):
                return None
            return pad
        written = torch.arange(kv_length, device=device) < q_offset + q_length
        keep = written if pad is None else written & pad
        states = torch.where(keep, 1, torch.where(written, 0, -1)).to(torch.int8)
        return states.expand(batch_size, kv_length)[:, None, None, :]

    # -- the attention function -------------------------------------------------------------------

    def attend(self, module, q, k, v, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
        _refuse(self.name, module, dropout, kwargs)
        q, k, v = _common_dtype(q, k, v)
        causal = bool(getattr(module, "is_causal", True) if is_causal is None else is_causal)
        lay = self.layout_for(getattr(module, "layer_idx", None))
        B, Hq, Sq, _ = q.shape
        Sk = k.shape[2]
        if lay.layout.shape[0] not in (1, Hq):
            raise ValueError(f"{self.name}: the layout has {lay.layout.shape[0]} heads; this layer has {Hq} query "
                             "heads (give one layout per query head, or one for all)")
        if lay.causal_only and not causal:
            raise ValueError(f"{self.name}: the layout came from a causal BlockMask (partial diagonal tiles), and "
                             "this attention is not causal")
        kind, keys = _key_input(self.name, attention_mask, B, Sk)
        if kind == "static":
            if Sk > lay.max_len:
                raise ValueError(f"{self.name}: the static cache holds {Sk} tokens, longer than the layout's "
                                 f"{lay.max_len}; give the cache max_cache_len <= {lay.max_len}")
            if Sq == 1:
                out = self._decode_on_device(lay, q, k, v, keys, causal, scaling)
                return out.transpose(1, 2).contiguous(), None
            if torch.compiler.is_compiling():
                raise ValueError(f"{self.name}: a compiled step of {Sq} queries with a static cache needs positions "
                                 "on the host; run the prefill eagerly (generate does) and compile decode steps")
            self._decode_tables(lay, q.device, causal)  # ready for compiled decode steps to come
            end = int((keys[0, 0, 0] >= 0).sum())
            k, v, keys = k[:, :, :end], v[:, :, :end], keys[:, 0, 0, :end] == 1
            keys = None if bool(keys.all()) else keys  # no padding: the kernels without a key mask
            Sk = end
        out = self._host_path(lay, q, k, v, keys, causal, scaling, Sq, Sk)
        return out.contiguous(), None

    def _host_path(self, lay, q, k, v, keep, causal, scaling, Sq, Sk):
        """(B, Sq, Hq, D): the exact crop of the layout, queries padded to a block row when unaligned."""
        if Sk > lay.max_len:
            raise ValueError(f"{self.name}: {Sk} keys is longer than the layout's {lay.max_len} tokens "
                             f"(built for max_seq_length={lay.max_len}); register a longer layout")
        if not causal and Sq != Sk:
            raise ValueError(f"{self.name}: non-causal attention of {Sq} queries over {Sk} keys (cross-attention?) "
                             "has no absolute query positions; only self-attention is supported")
        block = lay.block
        offset = Sk - Sq
        pad = offset % block if offset // block != (Sk - 1) // block else 0
        if pad:
            q = torch.nn.functional.pad(q, (0, 0, pad, 0))
        r0 = (offset - pad) // block
        rows, cols = -(-(Sq + pad) // block), -(-Sk // block)
        out = _attention_bshd(q, k, v, lay.crop(r0, rows, cols), block, causal, scaling, keep)
        return out[:, pad:] if pad else out

    def _decode_tables(self, lay: LayerLayout, device, causal: bool) -> DecodeTables:
        key = (str(device), causal)
        hit = lay.decode.get(key)
        if hit is None:
            hit = lay.decode[key] = build_decode_tables(lay, device, causal)
        return hit

    def _decode_on_device(self, lay, q, k, v, states, causal, scaling):
        """One query per sequence at the position the key states say, on the gathered keys of its row."""
        from sparsecli.kernels import blocksparse_attention

        t = self._decode_tables(lay, q.device, causal)
        B, Hq, _, D = q.shape
        Hkv, Sk = k.shape[1], k.shape[2]
        block, m = lay.block, t.slots
        ks = states[:, 0, 0, :]
        p = (ks[0] >= 0).sum() - 1  # the query's position: the last written slot
        r = torch.div(p, block, rounding_mode="floor").reshape(1)
        blocks = t.cols.index_select(1, r)[:, 0]  # (Hl, m)
        used = torch.arange(m, device=q.device) < t.counts.index_select(1, r)  # (Hl, m)
        tok = (blocks[..., None] * block + torch.arange(block, device=q.device)).flatten(1)  # (Hl, m*block)
        ok = used.repeat_interleave(block, 1) & (tok < Sk)
        if causal:
            ok &= tok <= p
        tok = torch.where(ok, tok, 0)
        if t.cols.shape[0] == 1:  # one layout for every head: gather per key/value head
            kg, vg = k.index_select(2, tok[0]), v.index_select(2, tok[0])
            keep = (ks.index_select(1, tok[0]) == 1) & ok[0]
            out = blocksparse_attention(q, kg, vg, t.ones, block, sm_scale=scaling,
                                        key_padding_mask=keep, key_padding_mask_mode="mul")
            return out
        # a layout per query head: each head gathers its own keys; heads fold into the batch
        head_kv = (torch.arange(Hq, device=q.device) // (Hq // Hkv))[:, None]
        kg, vg = k[:, head_kv, tok], v[:, head_kv, tok]  # (B, Hq, m*block, D)
        keep = (ks[:, tok] == 1) & ok  # (B, Hq, m*block)
        out = blocksparse_attention(q.reshape(B * Hq, 1, 1, D), kg.reshape(B * Hq, 1, m * block, D),
                                    vg.reshape(B * Hq, 1, m * block, D), t.ones, block, sm_scale=scaling,
                                    key_padding_mask=keep.reshape(B * Hq, m * block), key_padding_mask_mode="mul")
        return out.reshape(B, Hq, 1, D)


class _AttentionBSHD(torch.autograd.Function):
    """``blocksparse_attention`` with its output as (B, Sq, H, D), the layout the model's output
    projection reads. The backward keeps that tensor, which the projection keeps anyway, instead of
    a (B, H, Sq, D) copy of its own: one saved output per layer, as with SDPA (at 64k tokens the
    copy cost 2 GiB of peak memory over 8 layers)."""

    @staticmethod
    def forward(ctx, q, k, v, args):
        from sparsecli.kernels.fused.call import run_forward

        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        out, lse, plan = run_forward(args, q, k, v)
        out = out.transpose(1, 2).contiguous()
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.args, ctx.plan = args, plan
        return out

    @staticmethod
    def backward(ctx, dout):
        from sparsecli.kernels.fused.call import run_backward

        q, k, v, out, lse = ctx.saved_tensors
        heads_major = (lambda t: t.transpose(1, 2).contiguous())  # noqa: E731
        dq, dk, dv = run_backward(ctx.args, ctx.plan, q, k, v, heads_major(out), lse, heads_major(dout), None)
        return dq, dk, dv, None


def _attention_bshd(q, k, v, layout, block, causal, scaling, keep):
    """(B, Sq, H, D) attention of (B, H, S, D) inputs; the saving autograd path when gradients flow
    (eager), ``blocksparse_attention`` otherwise (inference, and compiled graphs: its custom op)."""
    from sparsecli.kernels import blocksparse_attention

    grads = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    if not grads or torch.compiler.is_compiling():
        out = blocksparse_attention(q, k, v, layout, block, causal=causal, sm_scale=scaling, key_padding_mask=keep,
                                    key_padding_mask_mode="mul")
        return out.transpose(1, 2)
    from sparsecli.kernels.fused.args import check_args

    args = check_args(q, k, v, layout, block, causal, scaling, keep, "mul", None, "mul", None, None)
    return _AttentionBSHD.apply(q, k, v, args)


def _check_pattern(mask_function) -> None:
    """Only plain causal or bidirectional attention: anything else is a pattern the layout would drop."""
    from transformers import masking_utils

    plain = (None, masking_utils.causal_mask_function, masking_utils.bidirectional_mask_function)
    if mask_function not in plain:
        what = getattr(mask_function, "__qualname__", type(mask_function).__name__)
        raise ValueError(f"transformers asked for the mask pattern {what} (packed sequences, a sliding window, "
                         "chunked attention or an overlay); the sparse layout takes only plain causal or "
                         "bidirectional masks plus padding")


def _refuse(name: str, module, dropout, kwargs) -> None:
    for key, why in _REFUSED.items():
        if kwargs.get(key) is not None:
            raise ValueError(f"{name}: {key}={kwargs[key]!r} is not supported: {why}")
    if kwargs.get("output_attentions"):
        raise ValueError(f"{name}: output_attentions=True is not supported: the sparse kernel never forms the "
                         "attention weights")
    if dropout and float(dropout) > 0 and getattr(module, "training", False):
        raise ValueError(f"{name}: dropout={dropout} in training is not supported: the sparse kernel has no "
                         "attention dropout (set the config's attention dropout to 0)")


def _common_dtype(q, k, v):
    """Under autocast, as SDPA does: all three in the autocast dtype (rotary embeddings leave q and k
    in fp32 while v comes from a bf16 projection)."""
    device = q.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
        return q.to(dtype), k.to(dtype), v.to(dtype)
    return q, k, v


def _key_input(name: str, mask, B: int, Sk: int):
    """("dynamic", None or (B, Sk) bool keep) or ("static", int8 (B, 1, 1, Sk) key states)."""
    if mask is None:
        return "dynamic", None
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name}: got a {type(mask).__name__} as attention mask; the sparse attention takes its own "
                         "masks (register_attention's mask function) or a 2-D padding mask")
    if mask.dim() == 2 and tuple(mask.shape) == (B, Sk):
        return "dynamic", mask.to(torch.bool)
    if mask.dim() == 4 and mask.dtype == torch.int8 and tuple(mask.shape) == (B, 1, 1, Sk):
        return "static", mask
    raise ValueError(f"{name}: an attention mask of shape {tuple(mask.shape)} and dtype {mask.dtype} reached the "
                     f"sparse attention (expected its own (B, {Sk}) key mask); a 4-D mask made elsewhere cannot be "
                     "honoured: pass the 2-D padding mask")
