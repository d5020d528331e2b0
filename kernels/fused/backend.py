"""Which kernels run a ``blocksparse_attention`` call: the Hopper (Gluon) ones or the portable Triton ones.

The one dispatch point. ``backend="auto"`` (the default) takes the Hopper kernels on an sm90
GPU for every call they support (``hopper.supports``: dtype, head dim, block 128, no masks or
rpe, ...) and the portable Triton kernels otherwise; ``"hopper"`` forces them (a ValueError with
the reason when they cannot take the call) and ``"triton"`` forces the portable path. The
environment variable ``SPARSECLI_ATTENTION_BACKEND`` stands in for ``"auto"`` (benchmarks set
it); an explicit argument wins over it.

The choice reads shapes, dtypes, the device and which optional arguments are given, never tensor
values, so it is static per call: ``torch.compile`` traces it (the device and environment
lookups are constants of the graph) and records the chosen path in the custom op's arguments.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

ENV = "SPARSECLI_ATTENTION_BACKEND"
CHOICES = ("auto", "hopper", "triton")


@dataclass(frozen=True)
class CallSpec:
    """What the choice looks at: one call without its tensors (``sparsecli info`` builds these)."""

    capability: tuple | None  # (major, minor) of the CUDA device; None for a CPU call
    dtype: torch.dtype
    head_dim: int
    block: int
    q_len: int
    k_len: int
    masks: bool = False  # key_padding_mask, attn_mask or rpe given
    segments: bool = False  # segment_ids given
    sm_scale: float = 1.0


def call_spec(q, k, args) -> CallSpec:
    """The ``CallSpec`` of a validated call (``args``: ``AttnArgs``)."""
    cap = device_capability(q.device.index if q.device.index is not None else -1) if q.is_cuda else None
    masks = args.key_padding_mask is not None or args.attn_mask is not None or args.rpe is not None
    return CallSpec(cap, q.dtype, q.shape[-1], args.block, q.shape[2], k.shape[2], masks,
                    args.segment_ids is not None, args.sm_scale)


@torch.compiler.assume_constant_result
def device_capability(index: int):
    """(major, minor) of CUDA device ``index`` (-1: the current one); a constant under tracing."""
    if index < 0:
        index = torch.cuda.current_device()
    return tuple(torch.cuda.get_device_capability(index))


@torch.compiler.assume_constant_result
def env_choice() -> str:
    """``SPARSECLI_ATTENTION_BACKEND`` as given ("" when unset); read when a call (or a compiled
    graph) is built."""
    return os.environ.get(ENV, "").strip().lower()


def hopper_reason(spec: CallSpec) -> str:
    """"" when the Hopper kernels can take the call, else why not."""
    from ..hopper.support import supports

    return supports(spec)


def choose(backend, spec: CallSpec) -> tuple[str, str]:
    """("hopper" or "triton", why) for a call asking for ``backend``; ValueError for an unknown
    name or a forced Hopper call the Hopper kernels cannot take."""
    requested, source = backend, "backend"
    if backend == "auto" and env_choice():
        requested, source = env_choice(), ENV
    if requested not in CHOICES:
        raise ValueError(f"{source} must be one of {', '.join(CHOICES)}, got {requested!r}")
    if requested == "triton":
        return "triton", f"{source}='triton'"
    why_not = hopper_reason(spec)
    if requested == "hopper":
        if why_not:
            raise ValueError(f"{source}='hopper': the Hopper kernels cannot run this call: {why_not}; "
                             f"use backend='auto' (falls back to the Triton kernels) or 'triton'")
        return "hopper", f"{source}='hopper'"
    if why_not:
        return "triton", why_not
    return "hopper", "sm90 GPU and a call the Hopper kernels support"


# Which backward a call runs: (kernels, deterministic) -> (label for bench rows and JSON, description).
BACKWARDS = {
    ("hopper", True): ("hopper-deterministic", "a dQ launch and a dK/dV launch, no atomics: the same gradients "
                                               "every run (7 GEMMs per tile pair)"),
    ("hopper", False): ("hopper-dq-atomic", "one dK/dV launch that also reduce-adds dQ in fp32 with TMA (5 GEMMs "
                                            "per tile pair); dQ's summation order varies between runs"),
    ("triton", True): ("triton-deterministic", "a dQ launch and a dK/dV launch, no atomics"),
    ("triton", False): ("triton-deterministic", "deterministic anyway: the portable kernels have no atomic dQ "
                                                "(nor has the CPU path)"),
}


def backward_kind(backend: str, deterministic: bool) -> tuple[str, str]:
    """(label, description) of the backward that kernels ``backend`` run for ``deterministic``."""
    return BACKWARDS[(backend, bool(deterministic))]
