#!/usr/bin/env bash
# bench/wait_policy.sh: how OpenMP's idle workers wait, side by side: the
# fused step at THREADS threads under OMP_WAIT_POLICY=passive (what the
# project's scripts set), passive with a bounded spin (GOMP_SPINCOUNT) and
# active, plus one thread passive for the ratio; alternated ROUNDS times so
# a busy machine slows all alike.
#
#   bash bench/wait_policy.sh DATA.h5 [ROUNDS] [THREADS] [CONFIG] [--set key=value ...]
#
# Each run trains 5 epochs; prints the median over rounds and epochs 2-5 of
# ms a step, the Adam phase and the wait for the sampler (ms a step), and
# each policy's sequences/s against one thread's. CONFIG defaults to
# configs/beauty.yaml. BENCH_OUT=DIR keeps the metrics files.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${1:?usage: bench/wait_policy.sh DATA.h5 [ROUNDS] [THREADS] [CONFIG] [--set key=value ...]}
ROUNDS=${2:-2}
THREADS=${3:-2}
CONFIG=${4:-$ROOT/configs/beauty.yaml}
shift $(( $# < 4 ? $# : 4 ))
BIN=${SASREC_DDP:-$ROOT/build/sasrec_ddp}
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"
unset OMP_WAIT_POLICY GOMP_SPINCOUNT

# name|environment|threads
variants=("one_thread|OMP_WAIT_POLICY=passive|1"
          "passive|OMP_WAIT_POLICY=passive|$THREADS"
          "passive_spin|OMP_WAIT_POLICY=passive GOMP_SPINCOUNT=300000|$THREADS"
          "active|OMP_WAIT_POLICY=active|$THREADS")
for round in $(seq 1 "$ROUNDS"); do
  for v in "${variants[@]}"; do
    IFS='|' read -r name environment threads <<< "$v"
    echo "round $round: $name"
    # shellcheck disable=SC2086,SC2163  # the environment is words: NAME=value pairs to export
    (export $environment; five_epochs "$BIN" "$DATA" "$CONFIG" "$threads" "${name}_r$round" "$@")
  done
done

python3 - "$OUT" "$THREADS" <<'PY'
import json, os, statistics, sys
out, threads = sys.argv[1], sys.argv[2]
names = ["one_thread", "passive", "passive_spin", "active"]
ms = {}
print(f"{'policy':14}{'threads':>8}{'ms/step':>9}{'adam':>7}{'wait':>7}{'vs 1 thread':>13}"
      "   (medians over rounds and epochs 2-5; ms a step)")
for name in names:
    steps, adam, wait = [], [], []
    for f in sorted(os.listdir(out)):
        if not (f.startswith(name + "_r") and f.endswith(".jsonl")):
            continue
        for line in open(os.path.join(out, f)):
            e = json.loads(line)
            if e.get("event") == "train_epoch" and e["epoch"] >= 2:
                n = e["steps"]
                steps.append(1000 * e["seconds"] / n)
                adam.append(1000 * e["phase_seconds"]["step"] / n)
                wait.append(1000 * e["phase_seconds"]["sample"] / n)
    ms[name] = statistics.median(steps)
    ratio = ms["one_thread"] / ms[name]
    print(f"{name:14}{1 if name == 'one_thread' else threads:>8}{ms[name]:9.3f}{statistics.median(adam):7.3f}"
          f"{statistics.median(wait):7.3f}{ratio:12.2f}x")
PY
