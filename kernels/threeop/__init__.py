"""DeepSpeed's three-op path: ``MatMul`` (sdd/dsd/dds block-sparse products), ``Softmax`` over the
sparse scores, and the block-sparse format converters (``sparse_format``); ``tiles`` holds the
chunk indexing the two kernels share. Exported from ``sparsecli.kernels``."""
