"""Triton kernels and launchers for the two block-sparse products every MatMul mode reduces to.

- ``sdd``: sparse C = A @ B, computed only on C's layout blocks.
- ``dsd``: dense C = op(S) @ B, S sparse and op(S) = S or S^T.

``dds`` and all gradients are these two on transposed views (see matmul.py), so each operand
is addressed through its strides and "transposed" is a free relabelling, never a copy.

Each program owns its output tile and loops over its reduction, so results are deterministic:
no atomics and no split-K (DeepSpeed's spin-locks made summation order vary run to run).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._checks import dot_precision, group_size, interpreting, next_pow2
from .tiles import chunk_offsets, load_dense_pieces, load_sparse_chunk

# Tokens one tile spans along the grouped axis: blocks of 16/32 are grouped up to this width.
_GROUP_TOKENS = 64


@triton.jit
def _sdd_kernel(A, B, C, chunks, row_ptr, col_idx, K,
                s_az, s_ah, s_am, s_ak, s_bz, s_bh, s_bk, s_bn, s_cz, R,
                BLOCK: tl.constexpr, G: tl.constexpr, BLOCK_K: tl.constexpr, PRECISION: tl.constexpr):
    # One program: up to G consecutive blocks of one layout row, sharing the A rows.
    pid = tl.program_id(0)
    z = tl.program_id(1).to(tl.int64)
    hr = tl.load(chunks + 2 * pid)
    start = tl.load(chunks + 2 * pid + 1)
    end = tl.load(row_ptr + hr + 1)
    h = (hr // R).to(tl.int64)
    r = hr % R
    A += z * s_az + h * s_ah
    B += z * s_bz + h * s_bh
    rm = r * BLOCK + tl.arange(0, BLOCK)
    rk = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK, G * BLOCK), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        a = tl.load(A + rm[:, None] * s_am + kk[None, :] * s_ak)
        b = load_dense_pieces(B, kk, kk < K, col_idx, start, end, s_bk, s_bn, BLOCK_K, BLOCK, G, False)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    C += z * s_cz
    out = acc.to(C.dtype.element_ty)
    if G == 1:
        i = tl.arange(0, BLOCK)
        tl.store(C + start.to(tl.int64) * (BLOCK * BLOCK) + i[:, None] * BLOCK + i[None, :], out)
    else:
        offs, ok = chunk_offsets(start, end, BLOCK, G)
        tl.store(C + offs, tl.reshape(out, (BLOCK, G, BLOCK)), mask=ok)


@triton.jit
def _dsd_kernel(S, B, C, ptr, k_idx, blk_idx, N,
                s_sz, s_bz, s_bh, s_bk, s_bn, s_cz, s_ch, s_cm, s_cn, R,
                BLOCK: tl.constexpr, G: tl.constexpr, TN: tl.constexpr, TRANS: tl.constexpr,
                PRECISION: tl.constexpr):
    # One program: one block row of op(S) times a TN-wide slab of B; G blocks per dot.
    hr = tl.program_id(0)
    z = tl.program_id(2).to(tl.int64)
    h = (hr // R).to(tl.int64)
    r = hr % R
    start = tl.load(ptr + hr)
    end = tl.load(ptr + hr + 1)
    rn = tl.program_id(1) * TN + tl.arange(0, TN)
    n_ok = rn < N
    S += z * s_sz
    B += z * s_bz + h * s_bh
    acc = tl.zeros((BLOCK, TN), dtype=tl.float32)
    for p in range(start, end, G):
        a = load_sparse_chunk(S, blk_idx, p, end, BLOCK, G, TRANS)
        b = load_dense_pieces(B, rn, n_ok, k_idx, p, end, s_bn, s_bk, TN, BLOCK, G, True)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    rm = r * BLOCK + tl.arange(0, BLOCK)
    C += z * s_cz + h * s_ch
    tl.store(C + rm[:, None] * s_cm + rn[None, :] * s_cn, acc.to(C.dtype.element_ty), mask=n_ok[None, :])


def _launch_opts(tile_elems: int, dtype: torch.dtype, config: dict | None, short_loop: bool = False) -> dict:
    # A loop of one or two steps gains nothing from a third buffer, and the shared memory it
    # holds costs resident programs: H100 sweep, sdd block 64, D=64: 88 -> 115 TFLOP/s.
    opts = {} if interpreting() else {
        "num_warps": 8 if tile_elems >= 128 * 128 else 4,
        "num_stages": 2 if dtype == torch.float32 or (short_loop and tile_elems < 128 * 128) else 3,
    }
    opts.update({k: v for k, v in (config or {}).items() if k in ("num_warps", "num_stages")})
    return opts


def sdd_group(block: int) -> int:
    """Output blocks of one row that one sdd program computes (its LUT is chunked by this)."""
    return group_size(block, _GROUP_TOKENS)


def sdd(a, b, out, chunks, row_ptr, col_idx, num_rows: int, block: int, config: dict | None = None):
    """``out (Z, nnz, b, b) <- (a @ b)`` on the layout's blocks; a ``(Z,H,M,K)``, b ``(Z,H,K,N)`` views."""
    Z, _, _, K = a.shape
    if chunks.shape[0] == 0 or Z == 0:
        return out
    bk_max = 32 if a.dtype == torch.float32 else 64
    bk = (config or {}).get("BLOCK_K") or max(d for d in (16, 32, 64) if d <= bk_max and K % d == 0)
    G = sdd_group(block)
    _sdd_kernel[(chunks.shape[0], Z)](
        a, b, out, chunks, row_ptr, col_idx, K,
        *a.stride(), *b.stride(), out.stride(0), num_rows,
        BLOCK=block, G=G, BLOCK_K=bk, PRECISION=dot_precision(a.dtype),
        **_launch_opts(block * block * G, a.dtype, config, short_loop=K <= 2 * bk),
    )
    return out


def dsd(s, trans: bool, b, out, ptr, k_idx, blk_idx, num_rows: int, block: int, config: dict | None = None):
    """``out (Z,H,M,N) view <- op(s) @ b``; s ``(Z, nnz, b, b)`` contiguous, b a ``(Z,H,K,N)`` view.

    ``ptr/k_idx/blk_idx`` list, per block row of op(s), its blocks' inner index and storage id:
    CSR (row_ptr, col_idx, identity) for s, CSC (col_ptr, row_idx, csc_to_csr) for s^T.
    """
    Z, H, M, N = out.shape
    if Z == 0 or M == 0 or N == 0:
        return out
    tn_max = 64 if (block == 128 and s.dtype == torch.float32) else 128
    tn = (config or {}).get("TN") or min(tn_max, max(16, next_pow2(N)))
    _dsd_kernel[(H * num_rows, triton.cdiv(N, tn), Z)](
        s, b, out, ptr, k_idx, blk_idx, N,
        s.stride(0), b.stride(0), b.stride(1), b.stride(2), b.stride(3), *out.stride(), num_rows,
        BLOCK=block, G=group_size(block, _GROUP_TOKENS), TN=tn, TRANS=trans, PRECISION=dot_precision(s.dtype),
        **_launch_opts(block * tn, s.dtype, config),
    )
    return out
