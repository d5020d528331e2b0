"""Registers, spills and shared memory of each fused-attention kernel one fwd+bwd compiles.

Spills are what the D128 dK/dV tile shape is fighting (docs/perf-notes.md, run 12). GPU only;
reads Triton's compiled-kernel metadata (n_regs / n_spills), which is not a stable API.

    python scripts/kernel_resources.py CASE_ID [CASE_ID ...]   # ids from attention_cases.cases()
"""
import sys

import torch
from triton.runtime.jit import JITFunction

sys.path.insert(0, "scripts")
import attention_cases as bench  # noqa: E402
from sparsecli.kernels import blocksparse_attention  # noqa: E402

SEEN = {}
_run = JITFunction.run


def _recording_run(self, *args, **kw):
    compiled = _run(self, *args, **kw)
    key = (self.fn.__name__, kw.get("KEYS_OUTER"), kw.get("BLOCK_M"), kw.get("BLOCK_N"),
           kw.get("num_warps"), kw.get("num_stages"))
    if compiled is not None and key not in SEEN:
        compiled._init_handles()
        SEEN[key] = (compiled.n_regs, compiled.n_spills, compiled.metadata.shared)
    return compiled


def main():
    JITFunction.run = _recording_run
    for case_id in sys.argv[1:]:
        c = next(x for x in bench.cases() if x.case_id == case_id)
        lay = bench.make_layout(c.layout, c.block, c.S).cuda()
        q, k, v, dout = (torch.randn(c.B, bench.H, c.S, c.D, device="cuda", dtype=c.dtype,
                                     requires_grad=True) for _ in range(4))
        bench.step(lambda q, k, v: blocksparse_attention(q, k, v, lay, c.block), q, k, v, dout, "fwdbwd")()
        torch.cuda.synchronize()
        print(case_id)
        print("   (kernel, keys outer, BLOCK_M, BLOCK_N, warps, stages): regs, spills, shared bytes")
        for key, (regs, spills, smem) in SEEN.items():
            print(f"   {key}: {regs}, {spills}, {smem}")
        SEEN.clear()


if __name__ == "__main__":
    main()
