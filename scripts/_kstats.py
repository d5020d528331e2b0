"""Registers, spills and shared memory of every fused-attention kernel a fwd+bwd compiles."""
import sys, torch, triton
from triton.runtime.jit import JITFunction
sys.path.insert(0, "scripts")
import bench_attention as b
from sparsecli.kernels import blocksparse_attention
seen = {}
orig = JITFunction.run
def run(self, *a, **k):
    ck = orig(self, *a, **k)
    key = (self.fn.__name__, k.get("BLOCK_M"), k.get("BLOCK_N"), k.get("KEYS_OUTER"), k.get("num_stages"), k.get("num_warps"), k.get("HEAD_DIM"))
    if key not in seen and ck is not None:
        ck._init_handles()
        seen[key] = (ck.n_regs, ck.n_spills, ck.metadata.shared)
    return ck
JITFunction.run = run
for cid in sys.argv[1:]:
    c = next(x for x in b.cases() if x.case_id == cid)
    lay = b.make_layout(c.layout, c.block, c.S).cuda()
    q, k, v, do = (torch.randn(c.B, b.H, c.S, c.D, device="cuda", dtype=c.dtype, requires_grad=True) for _ in range(4))
    b.step(lambda q, k, v: blocksparse_attention(q, k, v, lay, c.block), q, k, v, do, "fwdbwd")()
    torch.cuda.synchronize()
    print(cid)
    for key, val in seen.items():
        print("  ", key, "regs %d spills %d smem %d" % val)
    seen.clear()
