"""``SparseSelfAttention``: DeepSpeed's block-sparse self-attention module on current PyTorch.

It keeps DeepSpeed's interface and behaviour: the layout is built once, at construction, as
``sparsity_config.make_layout(max_seq_length)`` into the ``master_layout`` buffer (so it is saved
in the state_dict); the layout used at length L is its top-left crop; on first use under
``torch.distributed`` the buffer is broadcast from rank 0, so random layouts agree across ranks;
a key given pre-transposed ``(B, H, D, L)`` is detected; mask modes are DeepSpeed's.

It fixes what DeepSpeed got wrong (docs/deepspeed-differences.md): ops are cached per instance
and keyed by (L, device, dtype), not in one class-wide dict keyed by L; bad lengths and head
counts raise ValueError naming the values; fp16, bf16 and fp32 all work; the default
``sparsity_config`` is a usable ``FixedSparsityConfig(num_heads=4)``; ``causal=None`` follows the
config's ``attention``.
"""
from __future__ import annotations

import torch
from torch import nn

from .backends import BACKENDS, make_op
from ..kernels.masks import check_mode
from ..layouts import FixedSparsityConfig

DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def default_sparsity_config() -> FixedSparsityConfig:
    """DeepSpeed's intended default: 4 heads (its ``SparsityConfig(num_heads=4)`` has no layout),
    with the "fixed" pattern, which is also the default mode of its JSON config."""
    return FixedSparsityConfig(num_heads=4)


def is_unidirectional(config) -> bool:
    """Whether ``config`` builds a unidirectional layout, read the way its layout code reads it
    (duck-typed configs without the property: ``attention == "unidirectional"``)."""
    return getattr(config, "unidirectional", getattr(config, "attention", None) == "unidirectional")


class SparseSelfAttention(nn.Module):
    """Block-sparse self-attention on ``(B, H, L, D)`` query, key and value.

    Args:
        sparsity_config: a ``SparsityConfig`` with a layout; default ``FixedSparsityConfig(num_heads=4)``.
        key_padding_mask_mode, attn_mask_mode: ``"add"`` (add the value: HF's extended mask) or
            ``"mul"`` (0 drops, anything else keeps). Bool masks always mean True = keep.
        max_seq_length: the longest L; the layout at L is the top-left crop of this one.
        backend: ``"fused"`` (one flash kernel) or ``"three_op"`` (DeepSpeed's MatMul/Softmax).
            CPU tensors without ``TRITON_INTERPRET=1`` use the PyTorch reference either way.
        causal: mask every key after its query, inside diagonal blocks too. ``None`` follows the
            config (``attention="unidirectional"``); ``False`` reproduces DeepSpeed, where a present
            block is fully visible.
    """

    def __init__(self, sparsity_config=None, key_padding_mask_mode="add", attn_mask_mode="mul",
                 max_seq_length=2048, *, backend="fused", causal=None):
        super().__init__()
        self.sparsity_config = default_sparsity_config() if sparsity_config is None else sparsity_config
        self.key_padding_mask_mode = check_mode(key_padding_mask_mode, "key_padding_mask_mode")
        self.attn_mask_mode = check_mode(attn_mask_mode, "attn_mask_mode")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.backend = backend
        self.causal = is_unidirectional(self.sparsity_config) if causal is None else bool(causal)
        self.max_seq_length = int(max_seq_length)
        self.register_buffer("master_layout", self.sparsity_config.make_layout(self.max_seq_length))
        self._need_layout_synchronization = True
        self._ops = {}
        self._ops_stamp = None

    @property
    def block(self) -> int:
        return self.sparsity_config.block

    @property
    def num_heads(self) -> int:
        return self.master_layout.shape[0]

    def extra_repr(self) -> str:
        return (f"{self.sparsity_config!r}, max_seq_length={self.max_seq_length}, backend={self.backend!r}, "
                f"causal={self.causal}")

    # -- layout and ops -------------------------------------------------------------------
    def sync_layout(self) -> None:
        """Broadcast ``master_layout`` from rank 0 (once; forward calls it on first use)."""
        if not self._need_layout_synchronization:
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            dist = torch.distributed
            layout = self.master_layout
            # NCCL only moves CUDA tensors; the buffer may still be on the CPU.
            if "nccl" in str(dist.get_backend()) and not layout.is_cuda:
                staged = layout.cuda()
                dist.broadcast(staged, src=0)
                layout.copy_(staged.cpu())
            else:
                dist.broadcast(layout, src=0)
            self._ops.clear()
        self._need_layout_synchronization = False

    def check_length(self, L: int, H: int | None = None) -> int:
        """Validate a sequence length (and head count) against this module; return L // block."""
        if L > self.max_seq_length:
            raise ValueError(f"sequence length {L} exceeds max_seq_length={self.max_seq_length}; build "
                             f"SparseSelfAttention with max_seq_length >= {L}")
        if L % self.block:
            raise ValueError(f"Sequence Length, {L}, needs to be dividable by Block size {self.block}! "
                             f"Pad it to {-(-L // self.block) * self.block} (SparseAttentionUtils.pad_to_block_size)")
        if H is not None and H != self.num_heads:
            raise ValueError(f"the input has {H} heads but sparsity_config.num_heads is {self.num_heads}; "
                             f"build the config with num_heads={H} (per model-parallel partition)")
        return L // self.block

    def get_layout(self, L: int) -> torch.Tensor:
        """The ``(H, L/block, L/block)`` layout used at length L: a crop of ``master_layout``, on the CPU."""
        self.sync_layout()
        nb = self.check_length(L)
        return self.master_layout[:, :nb, :nb].cpu().contiguous()

    def get_ops(self, H: int, L: int, device=None, dtype=torch.float16):
        """The op computing attention at (L, device, dtype), built once per instance and key."""
        device = torch.device(device if device is not None else self.master_layout.device)
        self.sync_layout()
        self.check_length(L, H)
        # Any in-place change of the buffer (load_state_dict, broadcast) or a move drops the cache.
        stamp = (self.master_layout.data_ptr(), self.master_layout._version)
        if stamp != self._ops_stamp:
            self._ops.clear()
            self._ops_stamp = stamp
        key = (L, device, dtype)
        if key not in self._ops:
            self._ops[key] = make_op(self.backend, self.get_layout(L), self.block, device)
        return self._ops[key]

    @torch.compiler.disable
    def _cached_op(self, H: int, L: int, device, dtype):
        """``get_ops`` outside ``torch.compile``'s tracing (one graph break): the op and its
        layout crop are then real, long-lived objects, so a compiled forward reuses their cached
        index tables instead of building a fresh layout (and tables) inside the graph each call."""
        return self.get_ops(H, L, device, dtype)

    # -- inputs ---------------------------------------------------------------------------
    @staticmethod
    def transpose_key_for_scores(x: torch.Tensor, L: int) -> torch.Tensor:
        """Undo a pre-transposed key ``(B, H, D, L)``. As in DeepSpeed, D == L cannot be told apart."""
        return x.transpose(-1, -2) if x.dim() == 4 and x.size(2) != L and x.size(3) == L else x

    @staticmethod
    def key_padding_for_sparse(mask, B: int, L: int, device) -> torch.Tensor | None:
        """``(B, L)``, HF's extended ``(B, 1, 1, L)`` or a batch-shared ``(1, L)`` -> ``(B, L)``."""
        if mask is None:
            return None
        shape = tuple(mask.shape)
        if mask.dim() > 2 and all(s == 1 for s in shape[1:-1]):
            mask = mask.reshape(shape[0], shape[-1])
        if mask.dim() == 2 and mask.shape[0] == 1:
            mask = mask.expand(B, -1)
        if tuple(mask.shape) != (B, L):
            raise ValueError(f"key_padding_mask must be (B, L) = ({B}, {L}) or (B, 1, 1, L), got {shape}")
        return mask.to(device)

    @staticmethod
    def attn_mask_for_sparse(mask, L: int, device) -> torch.Tensor | None:
        """``(L, L)``, possibly with leading size-1 dims; one mask shared by batch and heads."""
        if mask is None:
            return None
        shape = tuple(mask.shape)
        while mask.dim() > 2 and mask.shape[0] == 1:
            mask = mask[0]
        if tuple(mask.shape) != (L, L):
            raise ValueError(f"attn_mask must be (L, L) = ({L}, {L}), shared by batch and heads, got {shape}; "
                             "pass per-batch additive masks as rpe")
        return mask.to(device)

    def _check_qkv(self, query, key, value):
        for name, t in (("query", query), ("key", key), ("value", value)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                raise ValueError(f"{name} must be a (B, H, L, D) tensor, got {getattr(t, 'shape', type(t).__name__)}")
            if t.dtype not in DTYPES:
                raise ValueError(f"{name} has dtype {t.dtype}; SparseSelfAttention supports {DTYPES}")
            if t.dtype != query.dtype:
                raise ValueError(f"{name} has dtype {t.dtype} but query has {query.dtype}")
        if not (query.shape == key.shape == value.shape):
            if query.shape[:2] == key.shape[:2] == value.shape[:2] and key.shape == value.shape \
                    and query.shape[3] == key.shape[3]:
                raise NotImplementedError(f"only self-attention is supported for now: query length "
                                          f"{query.shape[2]} != key length {key.shape[2]}")
            raise ValueError(f"query, key and value must have one shape (B, H, L, D), got {tuple(query.shape)}, "
                             f"{tuple(key.shape)} and {tuple(value.shape)}")

    def forward(self, query, key, value, rpe=None, key_padding_mask=None, attn_mask=None):
        """Attention of ``(B, H, L, D)`` tensors; returns ``(B, H, L, D)`` in the query's dtype.

        ``rpe``: additive ``(B or 1, H or 1, L, L)`` bias, no gradient. ``key_padding_mask``:
        ``(B, L)`` or ``(B, 1, 1, L)``. ``attn_mask``: ``(L, L)`` indexed [query, key].
        """
        L = query.shape[2] if isinstance(query, torch.Tensor) and query.dim() == 4 else None
        if L is not None and isinstance(key, torch.Tensor):
            key = self.transpose_key_for_scores(key, L)
        self._check_qkv(query, key, value)
        B, H, L, _ = query.shape
        kpm = self.key_padding_for_sparse(key_padding_mask, B, L, query.device)
        am = self.attn_mask_for_sparse(attn_mask, L, query.device)
        if rpe is not None:
            rpe = rpe.detach().to(query.device)  # as in DeepSpeed, rpe gets no gradient
        op = self._cached_op(H, L, query.device, query.dtype)
        return op(query, key, value, causal=self.causal, kpm=kpm, kpm_mode=self.key_padding_mask_mode,
                  am=am, am_mode=self.attn_mask_mode, rpe=rpe)
