"""Triton block-sparse attention kernels (installed as ``sparsecli.kernels``).

``attention`` is the one entry (``blocksparse_attention``) and dispatch point; the index tables
(``lut``), mask modes (``masks``) and the plain-PyTorch reference (``reference``) every path
shares sit here at the top; the kernels live in a folder per path: ``fused/`` (portable Triton),
``hopper/`` (Gluon, sm90) and ``threeop/`` (DeepSpeed's MatMul/Softmax).

Names resolve lazily so that importing the package (or the reference) never imports Triton.
"""
from importlib import import_module

_EXPORTS = {
    "blocksparse_attention": ".attention",
    "MatMul": ".threeop.matmul",
    "Softmax": ".threeop.softmax",
    "dense_to_sparse": ".threeop.sparse_format",
    "sparse_to_dense": ".threeop.sparse_format",
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
