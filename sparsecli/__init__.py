"""sparsecli: block-sparse attention layouts, kernels and benchmarks (DeepSpeed sparse_attention, revived).

Public names resolve lazily, so ``sparsecli --help`` and ``import sparsecli`` stay light: torch is
imported only when a layout, module or kernel is first used.
"""
from .plumbing.lazy_exports import lazy_exports
from .plumbing.module_aliases import install as _install_module_aliases

_install_module_aliases()

__version__ = "0.1.0"

_EXPORTS = {
    "SparsityConfig": ".layouts",
    "DenseSparsityConfig": ".layouts",
    "FixedSparsityConfig": ".layouts",
    "VariableSparsityConfig": ".layouts",
    "BigBirdSparsityConfig": ".layouts",
    "BSLongformerSparsityConfig": ".layouts",
    "LocalSlidingWindowSparsityConfig": ".layouts",
    "CausalSlidingWindowSparsityConfig": ".layouts",
    "StreamingSparsityConfig": ".layouts",
    "DilatedSparsityConfig": ".layouts",
    "DocumentSparsityConfig": ".layouts",
    "CompositeSparsityConfig": ".layouts",
    "SparseSelfAttention": ".modules.attention",
    "BertSparseSelfAttention": ".modules.bert",
    "SparseAttentionUtils": ".modules.hf",
    "to_block_mask": ".modules.flex_mask",
    "from_block_mask": ".modules.flex_mask",
    "register_attention": ".modules.hf",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, ("__version__",))
