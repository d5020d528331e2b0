"""DeepSpeed mask semantics, turned into additive fp32 biases that every kernel adds to scores.

- mode ``"add"``: the value is added as-is (HF's extended mask: 0 keep, large negative drop).
- mode ``"mul"``: not a multiplication — 0 becomes -inf, any other value keeps (adds 0).
- bool masks mean True = keep, in either mode.
"""
from __future__ import annotations

import torch

MASK_MODES = ("add", "mul")


def check_mode(mode: str, name: str) -> str:
    if mode not in MASK_MODES:
        raise ValueError(f"{name} must be 'add' or 'mul', got {mode!r}")
    return mode


def additive_mask(mask: torch.Tensor, mode: str, name: str) -> torch.Tensor:
    """Return ``mask`` as an fp32 additive bias (0 keeps, -inf drops, other values add)."""
    check_mode(mode, f"{name}_mode")
    if mask.dtype == torch.bool:
        keep = mask
    elif mode == "mul":
        keep = mask != 0
    else:
        return mask.to(torch.float32)
    zero = torch.zeros((), dtype=torch.float32, device=mask.device)
    return torch.where(keep, zero, torch.tensor(float("-inf"), device=mask.device))
