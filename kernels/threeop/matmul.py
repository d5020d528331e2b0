"""DeepSpeed-compatible block-sparse ``MatMul`` (modes sdd, dsd, dds, with transposes) and autograd.

Shapes follow DeepSpeed (reference §3.2): dense operands ``(Z, H, rows, cols)``, sparse ones
``(Z, nnz, block, block)`` in ``layout.nonzero()`` order; fewer dims are padded with leading
singletons and the result loses as many leading dims as the inputs lacked (up to 4-D).
The layout describes the *stored* sparse operand: C for sdd, A for dsd, B for dds.

Every product and gradient is one of two kernels (``matmul_kernels``) on strided views:
with ``A_ = op(A)``, ``B_ = op(B)``, ``S_ = op(S)`` (a transpose where trans_* is set)

- sdd  C = A_ B_:   dA_ = dsd(C, B_^T),  dB_ = (dsd(C^T, A_))^T
- dsd  C = S_ B_:   dS = sdd(dC, B_^T) (or sdd(B_, dC^T) for S^T),  dB_ = dsd(S_^T, dC)
- dds  C = A_ S_:   C^T = dsd(S_^T, A_^T),  dA_ = (dsd(S_, dC^T))^T,  dS = sdd(A_^T, dC) (or sdd(dC^T, A_))

which are DeepSpeed's gradient modes m[1]m[0]m[2] (dA) and m[2]m[1]m[0] (dB).
"""
from __future__ import annotations

import torch

from . import matmul_kernels as K
from .._checks import check_block, check_tensor, interpreter_bf16
from ..lut import as_layout, block_tables, list_chunks

MODES = ("sdd", "dsd", "dds")


class _Luts:
    """Index tables of one layout on one device, built from the shared :func:`block_tables`."""

    def __init__(self, layout, block, device):
        t = block_tables(layout, device)
        self.t, self.device = t, device
        self.sdd_chunks = list_chunks(t.row_ptr, K.sdd_group(block))
        ident = torch.arange(t.nnz, dtype=torch.int32, device=device)
        # (ptr, inner index, storage id, block rows) of S (CSR) and of S^T (CSC).
        self.rows = {False: (t.row_ptr, t.col_idx, ident, t.num_rows), True: (t.col_ptr, t.row_idx, t.csc_to_csr, t.num_cols)}


def _mt(x):
    return x.transpose(-1, -2)


class _Products:
    """The two primitives bound to one layout and block size."""

    def __init__(self, luts: _Luts, block: int, config=None):
        self.l, self.block, self.config = luts, block, config

    def sdd(self, a, b):
        t = self.l.t
        out = torch.empty((a.shape[0], t.nnz, self.block, self.block), dtype=a.dtype, device=a.device)
        return K.sdd(a, b, out, self.l.sdd_chunks, t.row_ptr, t.col_idx, t.num_rows, self.block, self.config)

    def dsd(self, s, trans, b, out):
        ptr, k_idx, blk, rows = self.l.rows[trans]
        return K.dsd(s.contiguous(), trans, b, out, ptr, k_idx, blk, rows, self.block, self.config)

    def dense_out(self, like, rows, cols):
        return torch.empty((like.shape[0], self.l.t.num_heads, rows, cols), dtype=like.dtype, device=like.device)


class _MatMulFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, mode, ta, tb, ops: _Products):
        ctx.save_for_backward(a, b)
        ctx.args = (mode, ta, tb, ops)
        A = _mt(a) if ta else a
        B = _mt(b) if tb else b
        if mode == "sdd":
            return ops.sdd(A, B)
        if mode == "dsd":
            out = ops.dense_out(b, ops.l.rows[ta][3] * ops.block, B.shape[-1])
            return ops.dsd(a, ta, B, out)
        out = ops.dense_out(a, A.shape[-2], ops.l.rows[not tb][3] * ops.block)
        ops.dsd(b, not tb, _mt(A), _mt(out))
        return out

    @staticmethod
    def backward(ctx, dc):
        a, b = ctx.saved_tensors
        mode, ta, tb, ops = ctx.args
        A = _mt(a) if ta else a
        B = _mt(b) if tb else b
        need_a, need_b = ctx.needs_input_grad[:2]
        da = db = None
        if mode == "sdd":
            dc = dc.contiguous()
            if need_a:
                da = torch.empty_like(a)
                ops.dsd(dc, False, _mt(B), _mt(da) if ta else da)
            if need_b:
                db = torch.empty_like(b)
                ops.dsd(dc, True, A, db if tb else _mt(db))  # C^T A_ = dB_^T
        elif mode == "dsd":
            if need_a:
                da = ops.sdd(dc, _mt(B)) if not ta else ops.sdd(B, _mt(dc))
            if need_b:
                db = torch.empty_like(b)
                ops.dsd(a, not ta, dc, _mt(db) if tb else db)
        else:
            if need_a:
                da = torch.empty_like(a)
                dA_ = _mt(da) if ta else da
                ops.dsd(b, tb, _mt(dc), _mt(dA_))
            if need_b:
                db = ops.sdd(_mt(A), dc) if not tb else ops.sdd(_mt(dc), A)
        return da, db, None, None, None, None


class MatMul:
    """Block-sparse matrix product with DeepSpeed's interface: ``MatMul(layout, block, mode)(a, b)``."""

    def __init__(self, layout, block, mode, trans_a=False, trans_b=False):
        if mode not in MODES:
            raise NotImplementedError("Supported modes are: sdd, dsd, dds")
        self.layout = as_layout(layout)
        self.block = check_block(block)
        self.mode, self.trans_a, self.trans_b = mode, bool(trans_a), bool(trans_b)
        self.nnz = int(self.layout.sum())
        self.sparse_shape = (self.nnz, self.block, self.block)
        self.config = None  # launch overrides (num_warps, num_stages, BLOCK_K, TN), for benchmarks
        # Index tables, built here (the layout walk, once per layout object: MatMul sdd/dsd and
        # Softmax on one layout share it); a call on another device copies them there once.
        self._luts = _Luts(self.layout, self.block, torch.device("cpu"))
        self._luts_by_device = {self._luts.device: self._luts}

    def _ops(self, device):
        luts = self._luts
        if luts.device != device:
            luts = self._luts_by_device.get(device)
            if luts is None:
                luts = self._luts_by_device[device] = _Luts(self.layout, self.block, device)
            self._luts = luts
        return _Products(luts, self.block, self.config)

    def __call__(self, a, b):
        a = check_tensor(a, "a")
        b = check_tensor(b, "b", device=a.device)
        if torch.is_autocast_enabled(a.device.type) and a.device.type == "cuda":
            dt = torch.get_autocast_dtype(a.device.type)
            a, b = a.to(dt), b.to(dt)
        check_tensor(b, "b", dtype=a.dtype)
        if interpreter_bf16(a):  # same kernels in fp32, rounded back (see interpreter_bf16)
            return self(a.float(), b.float()).to(torch.bfloat16)
        ndim = max(a.dim(), b.dim())
        a = self._pad(a, "a", self.mode == "dsd")
        b = self._pad(b, "b", self.mode == "dds")
        self._check_shapes(a, b)
        c = _MatMulFn.apply(a, b, self.mode, self.trans_a, self.trans_b, self._ops(a.device))
        for _ in range(c.dim() - ndim):
            c = c.squeeze(0)
        return c

    def _pad(self, x, name, sparse):
        if x.dim() > 4:
            raise ValueError(f"{name} has {x.dim()} dimensions; at most 4 are supported")
        if sparse and x.dim() < 3:
            raise ValueError(f"{name} is the sparse operand and must be (Z, nnz, block, block), got shape {tuple(x.shape)}")
        return x.reshape((1,) * (4 - x.dim()) + tuple(x.shape))

    def _check_shapes(self, a, b):
        H, R, C = self.layout.shape
        blk = self.block
        A = _mt(a) if self.trans_a else a
        B = _mt(b) if self.trans_b else b
        if self.mode == "sdd":
            self._dense(A, "a", H, R * blk, None, "trans_a")
            self._dense(B, "b", H, A.shape[-1], C * blk, "trans_b")
            if A.shape[-1] % 16:
                raise ValueError(f"a: the reduction dimension ({A.shape[-1]}) must be a multiple of 16")
            self._batch(A, B)
            return
        sparse, sname, dense, dname = (a, "a", B, "b") if self.mode == "dsd" else (b, "b", A, "a")
        if tuple(sparse.shape[1:]) != self.sparse_shape:
            raise ValueError(f"{sname} must have trailing shape {self.sparse_shape} (nnz, block, block), got {tuple(sparse.shape)}")
        if self.mode == "dsd":
            inner = (R if self.trans_a else C) * blk
            self._dense(dense, dname, H, inner, None, "trans_b")
        else:
            inner = (C if self.trans_b else R) * blk
            self._dense(dense, dname, H, None, inner, "trans_a")
        self._batch(sparse, dense)

    @staticmethod
    def _dense(x, name, heads, rows, cols, flag):
        want = (heads, rows, cols)
        got = tuple(x.shape[1:])
        if any(w is not None and w != g for w, g in zip(want, got)):
            shown = tuple("*" if w is None else w for w in want)
            raise ValueError(f"{name} (after {flag}) must have shape (Z, {', '.join(map(str, shown))}), got (Z, {', '.join(map(str, got))})")

    @staticmethod
    def _batch(x, y):
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"a and b must have the same batch size Z, got {x.shape[0]} and {y.shape[0]}")
