"""DeepSpeed-compatible sparsity configurations, one module per layout family."""
from .base import SparsityConfig
from .bigbird import BigBirdSparsityConfig
from .dense import DenseSparsityConfig
from .fixed import FixedSparsityConfig
from .longformer import BSLongformerSparsityConfig
from .sliding_window import LocalSlidingWindowSparsityConfig
from .variable import VariableSparsityConfig

__all__ = [
    "SparsityConfig",
    "DenseSparsityConfig",
    "FixedSparsityConfig",
    "VariableSparsityConfig",
    "BigBirdSparsityConfig",
    "BSLongformerSparsityConfig",
    "LocalSlidingWindowSparsityConfig",
]
