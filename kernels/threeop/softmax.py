"""DeepSpeed-compatible block-sparse ``Softmax`` over the rows of a ``(Z, nnz, block, block)`` tensor.

Semantics (reference §2/§3.3): ``softmax(x*scale + rpe + key_padding_mask + attn_mask)`` over the
present blocks of each row, absent blocks counting as -inf; masks follow :mod:`.masks` ('add'
adds, 'mul' turns 0 into -inf, bool True keeps). rpe and the masks get no gradient, as in DeepSpeed.

Differences from DeepSpeed, on purpose:
- no whole row in registers: a program walks its row in chunks of blocks with an online max/sum
  (two passes), so rows of any length work (DeepSpeed failed at 4096 tokens, #1177);
- fully masked rows give zeros, not NaN;
- out of place: the result is a new tensor and ``x`` is left intact (DeepSpeed overwrote ``x``,
  which breaks any other user of the scores); callers that use the return value see no change.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._checks import check_block, check_tensor, group_size, interpreter_bf16, interpreting
from .tiles import chunk_ids, chunk_offsets
from ..lut import BlockTables, as_layout, block_tables
from ..masks import additive_mask, check_mode

# Elements of one chunk tile (BLOCK x G*BLOCK): enough work per step, bounded registers.
_CHUNK_ELEMS = 4096


@triton.jit
def _scores(X, RPE, KP, AM, col_idx, z, h, r, p, end, scale,
            s_rz, s_rh, s_rm, s_rn, s_kz, s_kn, s_am, s_an,
            BLOCK: tl.constexpr, G: tl.constexpr, HAS_RPE: tl.constexpr, HAS_KP: tl.constexpr,
            HAS_AM: tl.constexpr):
    """fp32 scores of one chunk ``(BLOCK, G, BLOCK)`` with biases added; -inf past the row's end."""
    offs, ok = chunk_offsets(p, end, BLOCK, G)
    x = tl.load(X + offs, mask=ok, other=0.0).to(tl.float32) * scale
    if HAS_RPE or HAS_KP or HAS_AM:
        cb, _ = chunk_ids(col_idx, p, end, G)
        col = cb[None, :, None] * BLOCK + tl.arange(0, BLOCK)[None, None, :]
        row = (r * BLOCK + tl.arange(0, BLOCK)).to(tl.int64)[:, None, None]
        if HAS_RPE:
            x += tl.load(RPE + z * s_rz + h * s_rh + row * s_rm + col * s_rn, mask=ok, other=0.0).to(tl.float32)
        if HAS_KP:
            x += tl.load(KP + z * s_kz + col * s_kn, mask=ok, other=0.0)
        if HAS_AM:
            x += tl.load(AM + row * s_am + col * s_an, mask=ok, other=0.0)
    return tl.where(ok, x, float("-inf")), offs, ok


@triton.jit
def _softmax_fwd(X, Y, RPE, KP, AM, row_ptr, col_idx, scale, s_xz,
                 s_rz, s_rh, s_rm, s_rn, s_kz, s_kn, s_am, s_an, R,
                 BLOCK: tl.constexpr, G: tl.constexpr, HAS_RPE: tl.constexpr, HAS_KP: tl.constexpr,
                 HAS_AM: tl.constexpr):
    # One program: the BLOCK token rows of one layout row; pass 1 max/sum, pass 2 write.
    hr = tl.program_id(0)
    z = tl.program_id(1).to(tl.int64)
    h = (hr // R).to(tl.int64)
    r = hr % R
    start = tl.load(row_ptr + hr)
    end = tl.load(row_ptr + hr + 1)
    X += z * s_xz
    Y += z * s_xz
    m = tl.full((BLOCK,), float("-inf"), tl.float32)
    l = tl.zeros((BLOCK,), tl.float32)
    for p in range(start, end, G):
        x, _, _ = _scores(X, RPE, KP, AM, col_idx, z, h, r, p, end, scale, s_rz, s_rh, s_rm, s_rn,
                          s_kz, s_kn, s_am, s_an, BLOCK, G, HAS_RPE, HAS_KP, HAS_AM)
        m_new = tl.maximum(m, tl.max(tl.max(x, 2), 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: keep exp() at 0, not NaN
        l = l * tl.exp(m - m_safe) + tl.sum(tl.sum(tl.exp(x - m_safe[:, None, None]), 2), 1)
        m = m_new
    m = tl.where(m == float("-inf"), 0.0, m)
    inv = tl.where(l > 0, 1.0 / tl.where(l > 0, l, 1.0), 0.0)  # fully masked row: l == 0, output zeros
    for p in range(start, end, G):
        x, offs, ok = _scores(X, RPE, KP, AM, col_idx, z, h, r, p, end, scale, s_rz, s_rh, s_rm, s_rn,
                              s_kz, s_kn, s_am, s_an, BLOCK, G, HAS_RPE, HAS_KP, HAS_AM)
        y = tl.exp(x - m[:, None, None]) * inv[:, None, None]
        tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=ok)


@triton.jit
def _softmax_bwd(Y, DY, DX, row_ptr, scale, s_yz, s_dyz, s_dxz,
                 BLOCK: tl.constexpr, G: tl.constexpr):
    # dx = scale * y * (dy - sum_row(y * dy)); pass 1 the row sums, pass 2 write.
    hr = tl.program_id(0)
    z = tl.program_id(1).to(tl.int64)
    start = tl.load(row_ptr + hr)
    end = tl.load(row_ptr + hr + 1)
    Y += z * s_yz
    DY += z * s_dyz
    DX += z * s_dxz
    acc = tl.zeros((BLOCK,), tl.float32)
    for p in range(start, end, G):
        offs, ok = chunk_offsets(p, end, BLOCK, G)
        y = tl.load(Y + offs, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=ok, other=0.0).to(tl.float32)
        acc += tl.sum(tl.sum(y * dy, 2), 1)
    for p in range(start, end, G):
        offs, ok = chunk_offsets(p, end, BLOCK, G)
        y = tl.load(Y + offs, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(DY + offs, mask=ok, other=0.0).to(tl.float32)
        dx = scale * y * (dy - acc[:, None, None])
        tl.store(DX + offs, dx.to(DX.dtype.element_ty), mask=ok)


def _launch(block: int):
    G = group_size(block, _CHUNK_ELEMS // block)
    opts = {} if interpreting() else {"num_warps": 8 if block * block * G > _CHUNK_ELEMS else 4}
    return G, opts


class _SoftmaxFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, rpe, kp, am, sm):
        t = sm.tables(x.device)
        y = torch.empty_like(x)
        G, opts = _launch(sm.block)
        rs = rpe.stride() if rpe is not None else (0, 0, 0, 0)
        ks = kp.stride() if kp is not None else (0, 0)
        ams = am.stride() if am is not None else (0, 0)
        if t.nnz and x.shape[0]:
            _softmax_fwd[(t.num_heads * t.num_rows, x.shape[0])](
                x, y, x if rpe is None else rpe, x if kp is None else kp, x if am is None else am,
                t.row_ptr, t.col_idx, float(scale), x.stride(0), *rs, *ks, *ams, t.num_rows,
                BLOCK=sm.block, G=G, HAS_RPE=rpe is not None, HAS_KP=kp is not None, HAS_AM=am is not None,
                **opts,
            )
        ctx.save_for_backward(y)
        ctx.scale, ctx.sm = float(scale), sm
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        sm = ctx.sm
        t = sm.tables(y.device)
        dy = dy.contiguous()
        dx = torch.empty_like(y)
        G, opts = _launch(sm.block)
        if t.nnz and y.shape[0]:
            _softmax_bwd[(t.num_heads * t.num_rows, y.shape[0])](
                y, dy, dx, t.row_ptr, ctx.scale, y.stride(0), dy.stride(0), dx.stride(0),
                BLOCK=sm.block, G=G, **opts,
            )
        return dx, None, None, None, None, None


class Softmax:
    """Block-sparse softmax with DeepSpeed's interface: ``Softmax(layout, block)(x, scale, ...)``."""

    def __init__(self, layout, block):
        self.layout = as_layout(layout)
        self.block = check_block(block)
        H, R, C = self.layout.shape
        self.sparse_shape = (int(self.layout.sum()), self.block, self.block)
        self.rows, self.cols = R * self.block, C * self.block
        # Index tables, built here (the layout walk, once per layout object: shared with MatMul
        # ops on the same layout); a call on another device fetches that device's copy once.
        self._tables = block_tables(self.layout)

    def tables(self, device) -> BlockTables:
        """The layout's index tables on ``device`` (an attribute read on the usual device)."""
        t = self._tables
        if t.row_ptr.device != device:
            t = self._tables = block_tables(self.layout, device)
        return t

    def __call__(self, x, scale=1.0, rpe=None, key_padding_mask=None, attn_mask=None,
                 key_padding_mask_mode="add", attn_mask_mode="add"):
        check_mode(key_padding_mask_mode, "key_padding_mask_mode")
        check_mode(attn_mask_mode, "attn_mask_mode")
        x = check_tensor(x, "x", dims=(3, 4))
        if interpreter_bf16(x):  # same kernels in fp32, rounded back (see interpreter_bf16)
            return self(x.float(), scale, rpe, key_padding_mask, attn_mask,
                        key_padding_mask_mode, attn_mask_mode).to(torch.bfloat16)
        squeeze = x.dim() == 3
        x = x.unsqueeze(0) if squeeze else x
        if tuple(x.shape[1:]) != self.sparse_shape:
            raise ValueError(f"x must have shape (Z, {', '.join(map(str, self.sparse_shape))}) (nnz, block, block), got {tuple(x.shape)}")
        Z, H = x.shape[0], self.layout.shape[0]
        M, N = self.rows, self.cols
        if rpe is not None:
            rpe = self._bias(rpe, "rpe", x, (Z, H, M, N), "(Z, H, M, N)", lambda t: t)
        if key_padding_mask is not None:
            key_padding_mask = self._bias(key_padding_mask, "key_padding_mask", x, (Z, N), "(Z, N)",
                                          lambda t: additive_mask(t, key_padding_mask_mode, "key_padding_mask"))
        if attn_mask is not None:
            attn_mask = self._bias(attn_mask, "attn_mask", x, (M, N), "(M, N)",
                                   lambda t: additive_mask(t, attn_mask_mode, "attn_mask"))
        y = _SoftmaxFn.apply(x.contiguous(), scale, rpe, key_padding_mask, attn_mask, self)
        return y.squeeze(0) if squeeze else y

    @staticmethod
    def _bias(t, name, x, shape, shown, convert):
        """Validate a bias/mask, convert it, and broadcast it to ``shape`` (size-1 dims get stride 0)."""
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, but x is on {x.device}")
        if t.is_complex() or (name == "rpe" and not t.is_floating_point()):
            raise ValueError(f"{name} has unsupported dtype {t.dtype}")
        try:
            return convert(t).expand(shape)
        except RuntimeError:
            raise ValueError(f"{name} must have shape {shown} = {shape}, got {tuple(t.shape)}") from None
