"""A stand-in GPU worker for CPU tests (``python -m tests.bench.fake_worker``): the real worker's
plan and runner on the CPU with a fixed timer. The GPU named in $FAKE_DEAD_GPU dies after its
first row, as a GPU that faults mid-sweep would."""
import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "0"  # no GPU kernels here: `sparse` takes its CPU reference path, fast

from sparsecli.bench.timing import Timing  # noqa: E402
from sparsecli.bench.worker import run_spec  # noqa: E402


def timer(fn):
    fn()
    return Timing(1.0, 0.99, 1.01)


class DiesAfterOneRow:
    def write(self, text):
        sys.stdout.write(text)

    def flush(self):
        sys.stdout.flush()
        print("RuntimeError: CUDA error: an illegal memory access was encountered", file=sys.stderr, flush=True)
        os._exit(7)


if __name__ == "__main__":
    spec = json.loads(sys.stdin.read())
    dead = os.environ.get("SPARSECLI_BENCH_DEVICE") == os.environ.get("FAKE_DEAD_GPU")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == f"GPU-{os.environ['SPARSECLI_BENCH_DEVICE']}"  # pinned (test's ids)
    run_spec(spec, device="cpu", timer=timer, out=DiesAfterOneRow() if dead else None)
