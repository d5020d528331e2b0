"""The portable fused block-sparse attention (Triton, any CUDA GPU and the interpreter), and the
call layer every backend goes through: argument checks (``args``), the per-call backend choice
(``backend``), the ``torch.library`` op (``op``), the launch plan shared with the Hopper kernels
(``plan``: schedules from ``..lut``, TMA descriptors in ``tma``, segment tile lists in
``segments``), and the kernels themselves (``fwd``, ``bwd``, their pieces in ``common``).

The public entry is ``sparsecli.kernels.blocksparse_attention``.
"""
