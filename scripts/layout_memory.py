"""Measure the peak RSS of ``sparsecli layout`` and compare it with the guard's estimate.

Each case runs the real command (report, terminal preview, heatmap) in a fresh process that
reports its own peak (VmHWM). Prints measured vs ``layout_peak_bytes``.

    python scripts/layout_memory.py            # the sizes below (up to ~3 GiB each)
    python scripts/layout_memory.py 131072     # add a sequence length (block 16, 16 heads)
"""
import os
import subprocess
import sys
import tempfile

from sparsecli.layouts.memory import layout_peak_bytes

CASES = [  # (kind, extra flags, seq, heads)
    ("dense", [], 16384, 16), ("dense", [], 32768, 16), ("dense", [], 65536, 16),
    ("fixed", ["--different-layout-per-head", "--num-different-global-patterns", "4"], 32768, 16),
    ("fixed", [], 65536, 16), ("fixed", [], 65536, 1), ("fixed", [], 65536, 4),
    ("bigbird", ["--different-layout-per-head"], 32768, 16), ("bigbird", ["--different-layout-per-head"], 65536, 16),
    ("variable", ["--num-random-blocks", "2", "--different-layout-per-head"], 65536, 16),
    ("bslongformer", [], 65536, 16), ("dilated", [], 65536, 16), ("document", ["--document-lengths", "5000,20000"], 65536, 16),
]


# The child reports its own high-water mark (VmHWM, per address space, so reset by exec): the
# rusage of a forked child also counts the parent's pages it held before exec.
CHILD = ("import atexit, sys\n"
         "atexit.register(lambda: sys.stderr.write(next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))))\n"
         "from sparsecli.cli import main\nmain()")


def peak_rss(args: list[str]) -> int:
    """Peak resident bytes of ``sparsecli ARGS`` run in a fresh process (Linux)."""
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    line = next(x for x in proc.stderr.splitlines() if x.startswith("VmHWM"))
    return int(line.split()[1]) * 1024


if __name__ == "__main__":
    cases = CASES + [("fixed", [], int(s), 16) for s in sys.argv[1:]]
    print(f"{'case':58} {'measured':>10} {'estimate':>10} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        for kind, flags, seq, heads in cases:
            args = ["layout", kind, "--seq", str(seq), "--block", "16", "--heads", str(heads), *flags,
                    "--plot", "-o", os.path.join(tmp, "x.png")]
            got = peak_rss(args)
            want = layout_peak_bytes(heads, seq, 16)
            name = f"{kind} {' '.join(flags)} seq {seq} H {heads}"
            print(f"{name:58} {got / 2**30:9.2f}G {want / 2**30:9.2f}G {want / got:6.2f}", flush=True)
