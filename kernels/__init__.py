"""Triton block-sparse attention kernels (installed as ``sparsecli.kernels``).

Names resolve lazily so that importing the package (or the reference) never imports Triton.
"""
from importlib import import_module

_EXPORTS = {
    "blocksparse_attention": ".attention",
    "MatMul": ".matmul",
    "Softmax": ".softmax",
    "dense_to_sparse": ".sparse_format",
    "sparse_to_dense": ".sparse_format",
    "blocksparse_attention_reference": ".reference",
    "blocksparse_attention_dense": ".reference",
    "token_mask": ".reference",
    "block_tables": ".lut",
    "BlockTables": ".lut",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
