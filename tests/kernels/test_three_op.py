"""Three-op path (MatMul sdd/dsd/dds, Softmax) vs dense PyTorch math in float64.

CPU tier: DeepSpeed's test grid (reference §5) on its own or smaller shapes through Triton's
interpreter (fp16/fp32; bf16 runs in fp32 and is rounded back, the interpreter has no bf16 dot).
GPU tier (``-m gpu``): the full grid
at DeepSpeed's shapes plus bf16, block 128, 65,536-token softmax rows and determinism.
Tolerances are DeepSpeed's: fp32 rtol 5e-4/atol 5e-5, fp16 rtol 3e-2/atol 2e-3; bf16 (8-bit
mantissa, 8x coarser than fp16) gets rtol 3e-2/atol 1e-2. Outputs are NaN-poisoned first.
"""
from __future__ import annotations

import itertools

import pytest
import torch

from sparsecli.kernels._checks import interpreting
from sparsecli.kernels import MatMul, Softmax, dense_to_sparse, sparse_to_dense
from sparsecli.kernels.masks import additive_mask
from sparsecli.kernels.reference import blocksparse_attention_reference, token_mask

CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
INTERPRET = interpreting()
pytestmark = pytest.mark.usefixtures("poison")  # every kernel output starts as NaN
cpu_kernels = pytest.mark.skipif(not INTERPRET, reason="needs TRITON_INTERPRET=1 (set without CUDA)")
TOL = {torch.float32: (5e-4, 5e-5), torch.float16: (3e-2, 2e-3), torch.bfloat16: (3e-2, 1e-2)}
F16, F32, BF16 = torch.float16, torch.float32, torch.bfloat16


def make_layout(H, R, C, rho=0.5, seed=0):
    """DeepSpeed's random layout (density 1 - rho), with one empty row to exercise it."""
    g = torch.Generator().manual_seed(seed)
    lay = (torch.rand(H, R, C, generator=g) >= rho).long()
    lay[:, 0, 0] = 1
    if R > 2:
        lay[:, R // 2] = 0
    return lay


def close(out, ref, dtype, what):
    rtol, atol = TOL[dtype]
    torch.testing.assert_close(out.double(), ref.double(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


# ---------------------------------------------------------------------------------------------
# MatMul


def run_matmul(mode, trans_a, trans_b, block, dtype, Z, H, M, N, K, seed=1):
    """One MatMul forward + backward vs float64 dense math; the layout is of the sparse operand."""
    torch.manual_seed(seed)
    shape = {"sdd": (M, N), "dsd": (M, K), "dds": (K, N)}[mode]
    lay = make_layout(H, shape[0] // block, shape[1] // block, seed=seed)
    stored = lay.transpose(1, 2).contiguous() if (mode, trans_a, trans_b) in {("dsd", True, trans_b), ("dds", trans_a, True)} else lay

    def operand(name, rows, cols, trans):
        if (mode, name) in {("dsd", "a"), ("dds", "b")}:  # sparse: draw op(S) dense, store S
            dense = torch.randn(Z, H, rows, cols, device=DEV).to(dtype)
            return dense_to_sparse(dense.transpose(-1, -2) if trans else dense, stored, block)
        dense = torch.randn(Z, H, rows, cols, device=DEV).to(dtype)
        return dense.transpose(-1, -2).contiguous() if trans else dense

    a = operand("a", M, K, trans_a).requires_grad_()
    b = operand("b", K, N, trans_b).requires_grad_()
    c = MatMul(stored, block, mode, trans_a=trans_a, trans_b=trans_b)(a, b)
    dc = torch.randn_like(c.float()).to(dtype)
    c.backward(dc)

    a64 = a.detach().double().requires_grad_()
    b64 = b.detach().double().requires_grad_()
    A = sparse_to_dense(a64, stored, block) if mode == "dsd" else a64
    B = sparse_to_dense(b64, stored, block) if mode == "dds" else b64
    ref = (A.transpose(-1, -2) if trans_a else A) @ (B.transpose(-1, -2) if trans_b else B)
    if mode == "sdd":
        ref = dense_to_sparse(ref, lay, block)
    ref.backward(dc.double())
    tag = f"{mode} ta={trans_a} tb={trans_b} block={block} {dtype}"
    close(c, ref, dtype, f"{tag} out")
    close(a.grad, a64.grad, dtype, f"{tag} da")
    close(b.grad, b64.grad, dtype, f"{tag} db")
    return c, a, b


# DeepSpeed's 16 cases (§5): (mode, trans_a, trans_b, block, dtype).
DS_MATMUL = (
    [(m, False, tb, 16, F16) for m in ("sdd", "dds") for tb in (False, True)]
    + [("dsd", ta, False, 16, F16) for ta in (False, True)]
    + [(m, False, False, 16, F32) for m in ("sdd", "dsd", "dds")]
    + [(m, False, False, blk, F16) for blk in (16, 32, 64) for m in ("sdd", "dsd", "dds")]
)
DS_SHAPE = dict(Z=3, H=2, M=128, N=256, K=192)
ALL_TRANS = list(itertools.product(("sdd", "dsd", "dds"), (False, True), (False, True)))


@cpu_kernels
@pytest.mark.parametrize("mode,trans_a,trans_b,block,dtype", DS_MATMUL)
def test_matmul_deepspeed_grid_cpu(mode, trans_a, trans_b, block, dtype):
    run_matmul(mode, trans_a, trans_b, block, dtype, **DS_SHAPE)


@cpu_kernels
@pytest.mark.parametrize("mode,trans_a,trans_b", ALL_TRANS)
def test_matmul_every_transpose(mode, trans_a, trans_b):
    run_matmul(mode, trans_a, trans_b, 32, F32, Z=2, H=2, M=64, N=96, K=128)


@cpu_kernels
@pytest.mark.parametrize("mode", ["sdd", "dsd", "dds"])
def test_matmul_block128_and_odd_dense_dim(mode):
    # block 128, and a dense free dimension (N or M) that is not a power of 2 (masked tiles).
    run_matmul(mode, False, mode == "sdd", 128, F32, Z=1, H=1, M=128 if mode != "dds" else 48,
               N=256 if mode != "dsd" else 48, K=128 if mode != "sdd" else 80)


@cpu_kernels
@pytest.mark.parametrize("mode,trans_a", [("sdd", False), ("dsd", False), ("dsd", True), ("dds", False)])
def test_matmul_bf16_interpreter(mode, trans_a):
    # The interpreter's bf16 tl.dot multiplies raw bits (triton#11584): MatMul runs bf16 in fp32
    # and rounds back, so results, and gradients, are bf16 and right to bf16 precision.
    c, a, b = run_matmul(mode, trans_a, False, 16, BF16, Z=2, H=2, M=64, N=64, K=32)
    assert c.dtype == a.grad.dtype == b.grad.dtype == BF16


@pytest.mark.gpu
@pytest.mark.parametrize("mode,trans_a,trans_b,block,dtype", DS_MATMUL)
def test_matmul_deepspeed_grid_gpu(mode, trans_a, trans_b, block, dtype):
    run_matmul(mode, trans_a, trans_b, block, dtype, **DS_SHAPE)


@pytest.mark.gpu
@pytest.mark.parametrize("block", [16, 32, 64, 128])
@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("mode,trans_a,trans_b", ALL_TRANS)
def test_matmul_full_grid_gpu(mode, trans_a, trans_b, block, dtype):
    run_matmul(mode, trans_a, trans_b, block, dtype, Z=2, H=3, M=256, N=384, K=128 if mode == "sdd" else 256)


@pytest.mark.gpu
def test_matmul_deterministic_gpu():
    lay = make_layout(4, 32, 32, rho=0.3)
    p = torch.randn(2, 4, 512, 512, device="cuda", dtype=F16)
    v = torch.randn(2, 4, 512, 64, device="cuda", dtype=F16)
    op = MatMul(lay, 16, "dsd")
    s = dense_to_sparse(p, lay, 16)
    assert torch.equal(op(s, v), op(s, v))


@cpu_kernels
def test_matmul_pads_and_squeezes_like_deepspeed():
    lay = make_layout(1, 4, 4, seed=3)
    a, b = torch.randn(64, 32, dtype=F32), torch.randn(32, 64, dtype=F32)
    c = MatMul(lay, 16, "sdd")(a, b)  # 2-D in: DeepSpeed trims 4 - max(ndim) leading dims of the output
    assert c.shape == (int(lay.sum()), 16, 16)
    close(c, dense_to_sparse((a.double() @ b.double())[None, None], lay, 16)[0], F32, "2-D sdd")
    s = dense_to_sparse(torch.randn(1, 1, 64, 64), lay, 16)[0]  # (nnz, b, b)
    out = MatMul(lay, 16, "dsd")(s, torch.randn(64, 40))
    assert out.shape == (1, 64, 40)
    # Non-contiguous dense operands are read through their strides.
    a4 = torch.randn(1, 1, 32, 64).transpose(-1, -2)
    b4 = torch.randn(1, 1, 64, 32).transpose(-1, -2)
    c4 = MatMul(lay, 16, "sdd")(a4, b4)
    close(c4, dense_to_sparse(a4.double() @ b4.double(), lay, 16), F32, "strided sdd")


@cpu_kernels
def test_matmul_errors_name_the_argument(monkeypatch):
    lay = make_layout(2, 4, 4)
    nnz = int(lay.sum())
    a, b = torch.randn(1, 2, 64, 32), torch.randn(1, 2, 32, 64)
    with pytest.raises(NotImplementedError):
        MatMul(lay, 16, "ssd")
    with pytest.raises(ValueError, match="block"):
        MatMul(lay, 8, "sdd")
    sdd = MatMul(lay, 16, "sdd")
    with pytest.raises(ValueError, match="^b has dtype"):
        sdd(a, b.half())
    with pytest.raises(ValueError, match="^a has unsupported dtype"):
        sdd(a.double(), b.double())
    with pytest.raises(ValueError, match="^b is on meta"):
        sdd(a, b.to("meta"))
    with pytest.raises(ValueError, match="^a .*shape"):
        sdd(torch.randn(1, 2, 48, 32), b)
    with pytest.raises(ValueError, match="^b .*shape"):
        sdd(a, torch.randn(1, 2, 32, 48))
    with pytest.raises(ValueError, match="multiple of 16"):
        sdd(torch.randn(1, 2, 64, 24), torch.randn(1, 2, 24, 64))
    with pytest.raises(ValueError, match="at most 4"):
        sdd(a[None], b[None])
    with pytest.raises(ValueError, match="batch"):
        sdd(a, torch.cat([b, b]))
    dsd = MatMul(lay, 16, "dsd")
    with pytest.raises(ValueError, match=f"^a must have trailing shape \\({nnz}, 16, 16\\)"):
        dsd(torch.randn(1, nnz + 1, 16, 16), torch.randn(1, 2, 64, 8))
    with pytest.raises(ValueError, match="^b .*shape"):
        dsd(torch.randn(1, nnz, 16, 16), torch.randn(1, 2, 48, 8))
    dds = MatMul(lay, 16, "dds")
    with pytest.raises(ValueError, match="^b must have trailing shape"):
        dds(torch.randn(1, 2, 8, 64), torch.randn(1, nnz, 16, 8))
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="^a must be a CUDA tensor"):
        sdd(a, b)


# ---------------------------------------------------------------------------------------------
# Softmax


def softmax_reference(x, lay, block, scale, rpe=None, kp=None, am=None, kp_mode="add", am_mode="add"):
    """Dense float64 DeepSpeed softmax on the layout's blocks; fully masked rows give 0."""
    s = x.double() * scale
    if rpe is not None:
        s = s + rpe.double()
    if kp is not None:
        s = s + additive_mask(kp, kp_mode, "kp").double()[:, None, None, :]
    if am is not None:
        s = s + additive_mask(am, am_mode, "am").double()
    s = torch.where(token_mask(lay, block, device=x.device)[None], s, float("-inf"))
    alive = (s > float("-inf")).any(-1, keepdim=True)
    return torch.softmax(torch.where(alive, s, 0.0), -1) * alive


def run_softmax(block, width, dtype, Z=2, H=4, rows=None, scale=0.4, masks="deepspeed", seed=0):
    torch.manual_seed(seed)
    rows = rows or width
    lay = make_layout(H, rows // block, width // block, rho=0.4, seed=seed)
    x = torch.rand(Z, H, rows, width, device=DEV).to(dtype)
    kw, kp, am, rpe = {}, None, None, None
    if masks == "deepspeed":  # §5: kp 0/-inf added, attn_mask 0/1 in 'mul' mode
        kp = torch.where(torch.rand(Z, width, device=DEV) > 0.2, 0.0, float("-inf")).to(dtype)
        am = (torch.rand(rows, width, device=DEV) > 0.5).to(dtype)
        kw = dict(key_padding_mask=kp, attn_mask=am, key_padding_mask_mode="add", attn_mask_mode="mul")
    elif masks == "other modes":  # kp 0/1 'mul', bool attn_mask 'add', rpe, one batch fully masked
        kp = (torch.rand(Z, width, device=DEV) > 0.2).to(dtype)
        kp[0] = 0
        am = torch.rand(rows, width, device=DEV) > 0.3
        rpe = torch.randn(Z, H, rows, width, device=DEV).to(dtype)
        kw = dict(rpe=rpe, key_padding_mask=kp, attn_mask=am, key_padding_mask_mode="mul", attn_mask_mode="add")
    xs = dense_to_sparse(x, lay, block).requires_grad_()
    y = Softmax(lay, block)(xs, scale=scale, **kw)
    dy = torch.rand_like(y.float()).to(dtype)
    y.backward(dy)

    x64 = x.double().requires_grad_()
    ref = softmax_reference(x64, lay, block, scale, rpe, kp, am, kw.get("key_padding_mask_mode", "add"),
                            kw.get("attn_mask_mode", "add"))
    ref_s = dense_to_sparse(ref, lay, block)
    ref_s.backward(dy.double())
    tag = f"softmax block={block} width={width} {dtype} masks={masks}"
    assert not torch.isnan(y).any(), tag
    close(y, ref_s, dtype, f"{tag} y")
    close(xs.grad, dense_to_sparse(x64.grad, lay, block), dtype, f"{tag} dx")
    return y


DS_SOFTMAX = list(itertools.product((16, 32), (256, 576), (F16, F32)))


@cpu_kernels
@pytest.mark.parametrize("block,width,dtype", DS_SOFTMAX)
def test_softmax_deepspeed_grid(block, width, dtype):
    run_softmax(block, width, dtype, Z=2, H=2 if width == 576 else 4, rows=min(width, 128))


@cpu_kernels
@pytest.mark.parametrize("block,dtype", [(16, F32), (64, F16), (128, F32)])
def test_softmax_other_mask_modes_rpe_and_fully_masked_rows(block, dtype):
    y = run_softmax(block, 256, dtype, Z=2, H=2, rows=128, masks="other modes")
    assert torch.all(y[0] == 0), "a batch whose keys are all padded must give zeros"


@cpu_kernels
def test_softmax_long_row_interpreter():
    # 16 token rows of 65,536 keys (4,096 blocks of 16): no row is ever held whole.
    run_softmax(16, 65536, F32, Z=1, H=1, rows=16, scale=1.0, masks=None)


@cpu_kernels
@pytest.mark.parametrize("masks", ["deepspeed", "other modes"])
def test_softmax_bf16_interpreter(masks):
    # Same fp32 route as MatMul's bf16 under the interpreter: bf16 output and gradient.
    y = run_softmax(16, 128, BF16, Z=2, H=2, rows=64, masks=masks)
    assert y.dtype == BF16


@pytest.mark.gpu
@pytest.mark.parametrize("block,width,dtype", DS_SOFTMAX)
def test_softmax_deepspeed_grid_gpu(block, width, dtype):
    run_softmax(block, width, dtype)


@pytest.mark.gpu
@pytest.mark.parametrize("block", [16, 32, 64, 128])
@pytest.mark.parametrize("dtype", [F16, BF16, F32])
@pytest.mark.parametrize("masks", ["deepspeed", "other modes"])
def test_softmax_full_grid_gpu(block, dtype, masks):
    run_softmax(block, 1024, dtype, Z=2, H=4, masks=masks)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,block", [(F16, 16), (BF16, 64), (F32, 128)])
def test_softmax_65536_token_rows_gpu(dtype, block):
    run_softmax(block, 65536, dtype, Z=1, H=2, rows=256, masks=None, scale=0.125)


@cpu_kernels
def test_softmax_errors_name_the_argument():
    lay = make_layout(2, 4, 4)
    nnz = int(lay.sum())
    sm = Softmax(lay, 16)
    x = torch.rand(1, nnz, 16, 16)
    with pytest.raises(ValueError, match="^x must have shape"):
        sm(torch.rand(1, nnz + 1, 16, 16))
    with pytest.raises(ValueError, match="^x has unsupported dtype"):
        sm(x.double())
    with pytest.raises(ValueError, match="^key_padding_mask must have shape"):
        sm(x, key_padding_mask=torch.zeros(1, 48))
    with pytest.raises(ValueError, match="^attn_mask must have shape"):
        sm(x, attn_mask=torch.zeros(64, 48))
    with pytest.raises(ValueError, match="^rpe is on meta"):
        sm(x, rpe=torch.zeros(1, 2, 64, 64, device="meta"))
    with pytest.raises(ValueError, match="attn_mask_mode"):
        sm(x, attn_mask_mode="mult")
    y = sm(x[0])  # 3-D (nnz, b, b) in, 3-D out
    assert y.shape == x.shape[1:]


# ---------------------------------------------------------------------------------------------
# Formats and the composed three-op attention


@cpu_kernels
def test_dense_sparse_round_trip_and_order():
    lay = make_layout(2, 3, 5, seed=7)
    x = torch.randn(2, 2, 48, 80)
    s = dense_to_sparse(x, lay, 16)
    h, r, c = lay.nonzero()[4]
    assert torch.equal(s[:, 4], x[:, h, r * 16:(r + 1) * 16, c * 16:(c + 1) * 16])
    back = sparse_to_dense(s, lay, 16, fill=float("nan"))
    keep = token_mask(lay, 16)[None].expand_as(x)
    assert torch.equal(back[keep], x[keep]) and torch.isnan(back[~keep]).all()


@cpu_kernels
@pytest.mark.parametrize("block", [16, 64])
def test_three_op_attention_matches_reference(block):
    # DeepSpeed's SparseSelfAttention: sdd (q k^T) -> softmax(scale, masks) -> dsd (p v).
    torch.manual_seed(0)
    B, H, S, D = 2, 2, 128, 32
    lay = make_layout(H, S // block, S // block, rho=0.5)
    q, k, v = (torch.randn(B, H, S, D, dtype=F32, requires_grad=True) for _ in range(3))
    am = torch.ones(S, S).tril()
    scores = MatMul(lay, block, "sdd", trans_b=True)(q, k)
    probs = Softmax(lay, block)(scores, scale=D ** -0.5, attn_mask=am, attn_mask_mode="mul")
    out = MatMul(lay, block, "dsd")(probs, v)
    ref = blocksparse_attention_reference(q, k, v, lay, block, attn_mask=am, compute_dtype=torch.float64)
    close(out, ref, F32, "three-op attention")
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), g)
    refs = torch.autograd.grad(ref, (q, k, v), g.double())
    for name, got, want in zip("qkv", grads, refs):
        close(got, want, F32, f"d{name}")
