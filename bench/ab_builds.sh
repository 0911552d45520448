#!/usr/bin/env bash
# bench/ab_builds.sh: two builds of the trainer side by side, at one and at
# two threads, alternated ROUNDS times so that a busy or drifting machine
# slows both alike. For "before and after" figures of a change: build the
# commit before it in a worktree (`git worktree add ../before COMMIT`, then
# its own `cmake` + `ninja sasrec_ddp`) and pass both binaries.
#
#   bash bench/ab_builds.sh BEFORE_BIN AFTER_BIN DATA.h5 [ROUNDS] [CONFIG] [--set key=value ...]
#
# Each run trains 5 epochs (no evaluation but a 100-user sampled one at the
# end). Prints, per build and thread count, the median over rounds and epochs
# 2-5 of ms a step and of its optimizer phase, each build's two threads
# against its one, and after / before per thread count: the median of the
# per-round ratios, with their range (a round's two runs are a minute apart).
# CONFIG defaults to configs/beauty.yaml. BENCH_OUT=DIR keeps the metrics files.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
usage="usage: bench/ab_builds.sh BEFORE_BIN AFTER_BIN DATA.h5 [ROUNDS] [CONFIG] [--set key=value ...]"
BEFORE=${1:?$usage}
AFTER=${2:?$usage}
DATA=${3:?$usage}
ROUNDS=${4:-4}
CONFIG=${5:-$ROOT/configs/beauty.yaml}
shift $(( $# < 5 ? $# : 5 ))
for bin in "$BEFORE" "$AFTER"; do
  [ -x "$bin" ] || { echo "bench/ab_builds.sh: $bin is not an executable (build it first)" >&2; exit 2; }
done
[ -f "$DATA" ] || { echo "bench/ab_builds.sh: $DATA: no such file (make it with csv2h5)" >&2; exit 2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

for round in $(seq 1 "$ROUNDS"); do
  for threads in 1 2; do
    for build in before after; do
      bin=$BEFORE
      [ "$build" = after ] && bin=$AFTER
      name="${build}_t${threads}_r$round"
      echo "round $round: $build, $threads thread(s)"
      five_epochs "$bin" "$DATA" "$CONFIG" "$threads" "$name" "$@"
    done
  done
done

python3 - "$OUT" "$ROUNDS" <<'PY'
import json, os, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])

def epochs(name):  # (ms a step, ms of the optimizer phase a step) of epochs 2-5
    rows = []
    for line in open(os.path.join(out, name + ".jsonl")):
        e = json.loads(line)
        if e.get("event") == "train_epoch" and e["epoch"] >= 2:
            n = e["steps"]
            rows.append((1000 * e["seconds"] / n, 1000 * e["phase_seconds"]["step"] / n))
    return rows

med = {}
print(f"{'build':8}{'threads':>8}{'ms/step':>9}{'step phase':>12}{'2 vs 1':>8}"
      "   (medians over rounds and epochs 2-5; ms a step)")
for build in ("before", "after"):
    for t in (1, 2):
        rows = [r for k in range(1, rounds + 1) for r in epochs(f"{build}_t{t}_r{k}")]
        med[build, t] = statistics.median(r[0] for r in rows)
        speedup = f"{med[build, 1] / med[build, 2]:7.3f}x" if t == 2 else ""
        print(f"{build:8}{t:>8}{med[build, t]:9.3f}{statistics.median(r[1] for r in rows):12.3f}{speedup:>8}")
for t in (1, 2):
    ratios = [statistics.median(r[0] for r in epochs(f"after_t{t}_r{k}")) /
              statistics.median(r[0] for r in epochs(f"before_t{t}_r{k}")) for k in range(1, rounds + 1)]
    print(f"after / before, {t} thread(s): {statistics.median(ratios):.3f} "
          f"(rounds {min(ratios):.3f}-{max(ratios):.3f})")
PY
