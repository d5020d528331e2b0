"""Sparsity configurations, one module per layout family: DeepSpeed's six (bit for bit) and the
patterns people use today (causal sliding window, attention sinks, dilated, packed documents),
plus unions and intersections of them."""
from .base import SparsityConfig
from .bigbird import BigBirdSparsityConfig
from .causal_sliding_window import CausalSlidingWindowSparsityConfig
from .composite import CompositeSparsityConfig
from .dense import DenseSparsityConfig
from .dilated import DilatedSparsityConfig
from .document import DocumentSparsityConfig
from .fixed import FixedSparsityConfig
from .longformer import BSLongformerSparsityConfig
from .sliding_window import LocalSlidingWindowSparsityConfig
from .streaming import StreamingSparsityConfig
from .variable import VariableSparsityConfig

__all__ = [
    "SparsityConfig",
    "DenseSparsityConfig",
    "FixedSparsityConfig",
    "VariableSparsityConfig",
    "BigBirdSparsityConfig",
    "BSLongformerSparsityConfig",
    "LocalSlidingWindowSparsityConfig",
    "CausalSlidingWindowSparsityConfig",
    "StreamingSparsityConfig",
    "DilatedSparsityConfig",
    "DocumentSparsityConfig",
    "CompositeSparsityConfig",
]
