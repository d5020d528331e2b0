"""``sparsecli`` as benchmarks/run_gpu.sh calls it, with only the GPU sweep faked: a run
(``bench --preset ...``) renders the canned results in $FAKE_RESULTS through the real CLI
(``bench --from``), keeping every other flag (gate, baseline directory, outputs, formats).
Each call's arguments are appended to $FAKE_LOG."""
import os
import sys

SWEEP_FLAGS = {"--preset", "-p", "--providers", "--seq", "--devices", "--warmup-ms", "--rep-ms", "--dtype",
               "--pass", "--head-dim", "--batch"}

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join(args) + "\n")
if args[:1] == ["bench"] and ("--preset" in args or "-p" in args):
    rest, i = [], 1
    while i < len(args):
        if args[i] in SWEEP_FLAGS:
            i += 2
            continue
        rest.append(args[i])
        i += 1
    args = ["bench", "--from", os.environ["FAKE_RESULTS"], *rest]
sys.argv = ["sparsecli", *args]

from sparsecli.cli import main  # noqa: E402

main()
