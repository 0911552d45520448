#!/usr/bin/env bash
# bench/sharded_table.sh: the sharded item table on a catalog that a
# replicated table cannot hold at 2 ranks on one machine (docs/large_catalogs.md).
#
#   bash bench/sharded_table.sh [ITEMS] [STEPS] [DATA.h5]
#
# DATA (default runs/scale/s<ITEMS>.h5, generated when missing: 200k users,
# ITEMS items (default 20,000,000), mean length 20) is trained with
# configs/scale_1m.yaml (d = 64, sampled_softmax K = 256, lazy_adam) on 2
# ranks, 1 thread each:
#   1. item_table replicated: the memory plan's verdict (a refusal is the
#      expected outcome: 3 x (I+1) x 64 x 4 bytes a rank);
#   2. item_table sharded: STEPS steps, then full-catalog and sampled
#      evaluation of 2,000 users; no checkpoints (they are built in memory).
# Prints per rank: peak RSS against the plan, ms per step, bytes per step in
# each all-to-all, evaluation users/s. BENCH_OUT=DIR keeps the files.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ITEMS=${1:-20000000}
STEPS=${2:-40}
DATA=${3:-$ROOT/runs/scale/s$ITEMS.h5}
BIN=${SASREC_DDP:-$ROOT/build/sasrec_ddp}
SYNTH=${SASREC_SYNTH:-$ROOT/build/sasrec_synth}
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

if [ ! -f "$DATA" ]; then
  mkdir -p "$(dirname "$DATA")"
  echo "generating $DATA (200k users x $ITEMS items, mean length 20)"
  "$SYNTH" --users 200000 --items "$ITEMS" --mean-length 20 --out "$DATA" > /dev/null
fi
common=(--set data.path="$DATA" --set output.progress=lines --set output.log_every=10
        --set train.max_steps="$STEPS" --set eval.max_users=2000 --set checkpoint.dir=)
np2() {  # np2 NAME ARGS...: 2 ranks, each under /usr/bin/time
  local name=$1; shift
  mpirun -np 2 --oversubscribe --bind-to none "${ROOT_FLAGS[@]}" -x OMP_WAIT_POLICY \
    bash -c '/usr/bin/time -v -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' "$OUT/$name.time" \
    "$BIN" "$ROOT/configs/scale_1m.yaml" "${common[@]}" "$@" --set output.metrics="$OUT/$name.jsonl" \
    > "$OUT/$name.log" 2>&1
}

echo "[1/2] 2 ranks, item_table replicated"
if np2 replicated --set train.item_table=replicated; then echo "  replicated: trained (the plan let it fit)"
else
  echo "  replicated: refused: $(grep -m1 -o 'needs about [^)]*)' "$OUT/replicated.log")"
  echo "  the advice: $(grep -m1 -o 'Or: .*' "$OUT/replicated.log")"
fi

echo "[2/2] 2 ranks, item_table sharded, $STEPS steps + evaluation of 2,000 users"
np2 sharded --set train.item_table=sharded

python3 - "$OUT" <<'PY'
import json, re, sys, os
out = sys.argv[1]
ev = [json.loads(l) for l in open(os.path.join(out, "sharded.jsonl"))]
start = next(e for e in ev if e["event"] == "start")
plan = next(e for e in ev if e["event"] == "memory_plan")
ep = [e for e in ev if e["event"] == "train_epoch"]
secs = sum(e["seconds"] for e in ep); steps = sum(e["steps"] for e in ep)
x = ep[-1]["exchange"]
print(f"data: {start['users']:,} users, {start['items']:,} items, d = 64; {start['item_rows_per_rank']:,} rows a rank")
for r in (0, 1):
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)",
                        open(os.path.join(out, f"sharded.time.{r}")).read()).group(1)) / 2**20
    print(f"rank {r}: peak RSS {rss:.2f} GiB (plan {plan['total_bytes'] / 2**30:.2f} GiB a rank)")
print(f"train: {steps} steps, {1000 * secs / steps:.1f} ms/step on average (rank 0: "
      + ", ".join(f"{k} {1000 * v / steps:.1f}" for k, v in ep[-1]["phase_seconds"].items()) + " ms)")
# The progress lines' clock: the first 10 steps touch the Adam state's pages first; the rest is the steady state.
at = {int(m.group(2)): float(m.group(1)) for m in
      re.finditer(r"\[\s*([\d.]+)s\] epoch \d+/\d+  step (\d+)/", open(os.path.join(out, "sharded.log")).read())}
if 10 in at and max(at) > 10:
    last = max(at)
    print(f"steady state: steps 10-{last} at {1000 * (at[last] - at[10]) / (last - 10):.1f} ms/step")
print(f"all-to-all bytes a step, rank 0: ids asked {x['request_bytes_per_step']:,}, rows served "
      f"{x['rows_bytes_per_step']:,}, gradients returned {x['gradient_bytes_per_step']:,}; "
      f"with the dense bucket {x['bytes_per_step']:,}; owned rows touched {x['item_rows_per_step']:,}")
for e in ev:
    if e["event"] == "eval":
        print(f"eval {e['split']}/{e['protocol']}: {e['users']} users in {e['seconds']:.1f} s "
              f"({e['users_per_s']:.0f} users/s), HR@10 {e['hr@10']:.4f}")
PY
