#!/usr/bin/env bash
# The features table on one GPU, in one call (docs/perf-notes.md). Steps, all by default:
#   tests   the GPU tier of the attention kernel tests, new grid included     -> $OUT/pytest.txt
#   table   the features table (GQA, head dims, decode vs Flex, compiled step) -> $OUT/features.json
#   before  our kernel on every pre-existing case, pre-change tree vs this one -> $OUT/ours-{old,new}.json
#   host    host time per call, pre-change tree vs this one (stdout)
#   tune    the tile sweep for head dims 96 and 256                             -> $OUT/tune.json
#   open    the rows run 1 left open, in <= 150 s: the D96/D256 sweep, the head-dim fractions and
#           the compiled GQA step vs eager, then what the sweep's best configs would give
#                                                                    -> $OUT/tune.json, $OUT/table.json
# Everything else goes to stdout (the caller tees it): $OUT holds at most 6 files.
#
#   OLD=/path/to/pre-change/tree bash scripts/gpu_features.sh [STEP ...]    # from this tree's root
set -uo pipefail
OUT=${OUT:-/tmp/features}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-/tmp/triton-cache}
steps=${*:-tests table before host}
new=$(pwd)
old=$(cd "${OLD:-$new}" && pwd)

# Each tree is imported as `sparsecli` through a folder of links laid out as its setuptools
# package-dir mapping (kernels/ and presets/ inside sparsecli/): no install, and the two trees'
# processes differ only in the tree.
link_tree() {
  local d=/tmp/pkg-$1
  rm -rf "$d" && mkdir -p "$d/sparsecli"
  ln -s "$2"/sparsecli/* "$d/sparsecli/" && ln -s "$2/kernels" "$d/sparsecli/kernels" && ln -s "$2/presets" "$d/sparsecli/presets"
  echo "$d"
}
P_NEW=$(link_tree new "$new")
P_OLD=$(link_tree old "$old")
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv

for step in $steps; do
  case $step in
  tests)
    echo "== GPU tier of the attention kernel tests"
    # importlib mode: pytest leaves sys.path alone, so `sparsecli` is the linked package and
    # `tests` this tree's (listed after it), not a same-named package of the image.
    PYTHONPATH=$P_NEW:$new timeout "${TEST_S:-150}" python3 -m pytest tests/kernels/test_attention.py \
      tests/kernels/test_attention_features.py tests/kernels/test_attention_compile.py \
      tests/kernels/test_attention_launch.py -m gpu -q -n 16 --import-mode=importlib -p no:cacheprovider \
      > "$OUT/pytest.txt" 2>&1
    tail -15 "$OUT/pytest.txt" ;;
  table)
    echo "== features table"
    PYTHONPATH=$P_NEW timeout "${TABLE_S:-150}" python3 scripts/bench_features.py \
      --out "$OUT/features.json" ;;
  before)
    echo "== our kernel before/after on the pre-existing cases"
    for tree in old new; do
      P=$P_NEW && [ $tree = old ] && P=$P_OLD
      for i in 0 1 2 3 4 5 6 7; do  # compile every case's kernels in parallel first (Triton's disk cache)
        PYTHONPATH=$P python3 scripts/bench_attention.py --ours-only --warm-only --shard $i/8 > /dev/null 2>&1 &
      done
      wait
      PYTHONPATH=$P timeout 60 python3 scripts/bench_attention.py --ours-only --out "$OUT/ours-$tree.json" 2>&1 | tail -1
    done
    PYTHONPATH=$P_NEW python3 scripts/bench_attention.py --compare-ours "$OUT/ours-old.json" "$OUT/ours-new.json" ;;
  host)
    echo "== host time per call (tiny problem, GPU idle)"
    for tree in old new old new; do
      P=$P_NEW && [ $tree = old ] && P=$P_OLD
      echo -n "$tree: " && PYTHONPATH=$P python3 scripts/host_overhead.py --cuda --calls 200
    done ;;
  open)
    echo "== open rows: D96/D256 tile sweep, head-dim fractions, compiled GQA step"
    # Compile first, in 16 parallel processes (11 sweep shards, 4 head-dim shards, the compiled
    # step): Triton's and inductor's disk caches then serve the timing processes.
    warm_tune="timeout ${WARM_S:-50} python3 scripts/tune_tiles.py --warm-only"
    warm_features="timeout ${WARM_S:-50} python3 scripts/bench_features.py --warm-only"
    for i in $(seq 0 10); do
      PYTHONPATH=$P_NEW $warm_tune --cases D96 D256 --shard "$i/11" > /dev/null 2>&1 &
    done
    for i in 0 1 2 3; do
      PYTHONPATH=$P_NEW $warm_features --parts head_dim --shard "$i/4" > /dev/null 2>&1 &
    done
    PYTHONPATH=$P_NEW $warm_features --parts model_step > /dev/null 2>&1 &
    wait
    PYTHONPATH=$P_NEW timeout "${TUNE_S:-45}" python3 scripts/tune_tiles.py --cases D96 D256 \
      --out "$OUT/tune.json" 2> /tmp/tune.err || tail -4 /tmp/tune.err
    PYTHONPATH=$P_NEW timeout "${TABLE_S:-45}" python3 scripts/bench_features.py --parts head_dim \
      model_step --out "$OUT/table.json" 2>&1 | cut -c1-220
    PYTHONPATH=$P_NEW python3 scripts/tune_tiles.py --summary "$OUT/table.json" "$OUT/tune.json" ;;
  tune)
    echo "== tile sweep, head dims 96 and 256"
    PYTHONPATH=$P_NEW timeout "${TUNE_S:-150}" python3 scripts/tune_tiles.py --cases D96 D256 \
      --out "$OUT/tune.json" ;;
  esac
done
