"""Providers: each turns a shape's layout into an attention callable ``fn(q, k, v) -> out``.

``setup(ctx)`` does the per-layout work (index tables, masks, BlockMask) so the runner can time
it apart from the calls. Dense ``sdpa-*`` providers are pinned to one backend: an unpinned SDPA
call may silently fall back to another kernel and the row would measure the wrong thing.
A provider that cannot run raises; ``classify`` turns the exception into the row's status.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .cases import SPARSE_SEMANTICS


@dataclass
class Ctx:
    layout: torch.Tensor  # (H, nb, nb) on the device, a fresh object per setup
    block: int
    causal: bool
    sm_scale: float
    seq_len: int
    head_dim: int | None = None
    dtype: torch.dtype | None = None


class Unavailable(Exception):
    """A provider whose software is missing on this machine; the message is the row's reason."""


def flash_attn_4():
    """``flash_attn.cute`` (flash-attn-4), or Unavailable saying why not."""
    import importlib

    try:
        return importlib.import_module("flash_attn.cute")
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] == "flash_attn" or e.name == "flash_attn.cute":
            raise Unavailable("flash-attn-4 not installed") from None
        raise Unavailable(f"flash-attn-4 not importable: {e}") from None
    except ImportError as e:  # installed, but a dependency (CUTLASS DSL, CUDA bindings) is broken
        raise Unavailable(f"flash-attn-4 not importable: {' '.join(str(e).split())[:160]}") from None


Attn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _sparse(deterministic: bool):
    def setup(ctx: Ctx) -> Attn:
        from ..kernels import blocksparse_attention

        return lambda q, k, v: blocksparse_attention(q, k, v, ctx.layout, ctx.block, causal=ctx.causal,
                                                     sm_scale=ctx.sm_scale, deterministic=deterministic)

    return setup


def _three_op(ctx: Ctx) -> Attn:
    # SparseSelfAttention(backend="three_op")'s op itself, so the bench times what users run.
    from ..modules.backends import _ThreeOp

    op = _ThreeOp(ctx.layout, ctx.block)
    if ctx.causal:
        op.causal_mask(ctx.seq_len, ctx.layout.device)  # built here (setup), reused by every call

    return lambda q, k, v: op(q, k, v, causal=ctx.causal, sm_scale=ctx.sm_scale)


def _token_mask(ctx: Ctx) -> torch.Tensor:
    from ..kernels import token_mask

    # token_mask builds on the CPU unless told otherwise; SDPA wants the mask beside q.
    return token_mask(ctx.layout, ctx.block, ctx.causal, device=ctx.layout.device)


def _sdpa_masked(ctx: Ctx) -> Attn:
    mask = _token_mask(ctx)[None]  # (1, H, S, S) bool: what people do without a sparse kernel

    return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, scale=ctx.sm_scale)


def _naive(ctx: Ctx) -> Attn:
    mask = _token_mask(ctx)[None]

    def fn(q, k, v):
        scores = (q @ k.transpose(-1, -2)) * ctx.sm_scale
        return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v

    return fn


def _flex(provider: str):
    def setup(ctx: Ctx) -> Attn:
        from ..modules.flex_mask import to_block_mask
        from . import flex

        if provider == "flex-flash":
            flash_attn_4()  # FLASH compiles into FA4's CuTe kernels
        # Flex is compiled per shape, as users run it; one preset sweep holds many shapes.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        torch._dynamo.config.automatic_dynamic_shapes = False
        block_mask = to_block_mask(ctx.layout, ctx.block, ctx.seq_len, causal=ctx.causal)
        backend = flex.BACKENDS[provider]
        return lambda q, k, v: flex.flex_attention_call(q, k, v, block_mask, ctx.sm_scale, backend)

    return setup


FA4_MAX_HEAD_DIM = 256


def _fa4_inputs(ctx: Ctx, name: str) -> None:
    """ValueError for what no FA4 kernel takes (head dim, dtype)."""
    if ctx.head_dim is not None and ctx.head_dim > FA4_MAX_HEAD_DIM:
        raise ValueError(f"{name} takes head dims up to {FA4_MAX_HEAD_DIM}, got {ctx.head_dim}")
    if ctx.dtype not in (None, torch.float16, torch.bfloat16):
        raise ValueError(f"{name} takes fp16 and bf16 inputs, got {str(ctx.dtype).removeprefix('torch.')}")


def _fa4(ctx: Ctx) -> Attn:
    """Dense FlashAttention-4: the fastest dense kernel on Hopper, on (B, S, H, D) views of q, k, v."""
    cute = flash_attn_4()  # first: "not installed" is the news on a machine without it
    _fa4_inputs(ctx, "fa4")

    def fn(q, k, v):
        # transpose(1, 2) is a view with unit stride in D: FA4 takes it without a copy.
        out = cute.flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                   softmax_scale=ctx.sm_scale, causal=ctx.causal)
        out = out[0] if isinstance(out, tuple) else out  # (out, lse) in the 4.0 betas
        return out.transpose(1, 2)

    return fn


def _fa4_sparse(deterministic: bool):
    def setup(ctx: Ctx) -> Attn:
        from .fa4_sparse import fa4_sparse_attention

        cute = flash_attn_4()
        _fa4_inputs(ctx, "fa4-sparse")
        return fa4_sparse_attention(cute, ctx.layout, ctx.block, ctx.sm_scale, causal=ctx.causal,
                                    deterministic=deterministic)

    return setup


def _pinned(backend_name: str):
    def setup(ctx: Ctx) -> Attn:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = getattr(SDPBackend, backend_name)

        def fn(q, k, v):
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, is_causal=ctx.causal, scale=ctx.sm_scale)

        return fn

    return setup


SETUPS = {
    "sparse": _sparse(deterministic=True),
    "sparse-nondet": _sparse(deterministic=False),
    "three-op": _three_op,
    "sdpa-flash": _pinned("FLASH_ATTENTION"),
    "sdpa-cudnn": _pinned("CUDNN_ATTENTION"),
    "sdpa-efficient": _pinned("EFFICIENT_ATTENTION"),
    "sdpa-masked": _sdpa_masked,
    "flex": _flex("flex"),
    "flex-flash": _flex("flex-flash"),
    "fa4": _fa4,
    "fa4-sparse": _fa4_sparse(deterministic=False),
    "fa4-sparse-det": _fa4_sparse(deterministic=True),
    "naive": _naive,
}


def setup(provider: str, ctx: Ctx) -> Attn:
    return SETUPS[provider](ctx)


def uses_layout(provider: str) -> bool:
    return provider in SPARSE_SEMANTICS


# The backward of the peers that have a choice (FA4 reduce-adds dQ unless asked not to).
PEER_BACKWARDS = {"fa4-sparse": "fa4-dq-atomic", "fa4-sparse-det": "fa4-deterministic", "flex-flash": "fa4-dq-atomic",
                  "fa4": "fa4-dq-atomic"}


def backward_of(provider: str, ctx: Ctx, q, k, v) -> str | None:
    """Which backward the provider runs on these inputs (results' ``backward`` column): ours as
    the dispatch decides it (``hopper-dq-atomic``, ``hopper-deterministic``, ...), FA4's, or None."""
    if provider not in ("sparse", "sparse-nondet"):
        return PEER_BACKWARDS.get(provider)
    from ..kernels.fused.backend import backward_kind
    from ..kernels.fused.args import check_args

    args = check_args(q, k, v, ctx.layout, ctx.block, ctx.causal, ctx.sm_scale, None, "add", None, "mul", None,
                      None, "auto", provider == "sparse")
    return backward_kind(args.backend, args.deterministic)[0]


# -- why a provider did not run ---------------------------------------------------------------

def classify(exc: BaseException) -> tuple[str, str]:
    """(status, reason) for a provider's exception: oom / unavailable / unsupported / failed."""
    text = " ".join(str(exc).split())
    first = text[:200]
    if isinstance(exc, Unavailable):
        return "unavailable", first
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in text.lower():
        return "oom", "out of device memory"
    if isinstance(exc, (ImportError, ModuleNotFoundError)):
        return "unavailable", f"not importable: {first}"
    if "No available kernel" in text or "not supported" in text.lower() or "no kernel image" in text:
        return "unavailable", first
    if isinstance(exc, (ValueError, NotImplementedError)):
        return "unsupported", first
    return "failed", f"{type(exc).__name__}: {first}"
