#!/usr/bin/env bash
# bench/scale.sh: the large-catalog benchmark of docs/large_catalogs.md.
#
#   bash bench/scale.sh [DATA.h5] [STEPS]
#
# DATA (default runs/scale/s1m.h5, generated when missing: 1M users x 1M
# items, mean length 20) is trained with configs/scale_1m.yaml (d = 64,
# sampled_softmax, lazy_adam):
#   1. one rank, one full epoch, then full-catalog and sampled evaluation of
#      10k users: epoch time, seq/s, peak RSS, evaluation time and users/s,
#      test HR@10 against the generator's oracle;
#   2. STEPS (default 300) steps on one rank with dense Adam on the item table;
#   3. STEPS steps on 2 ranks (1 thread each, batch 128 each) with the sparse
#      exchange, then with the dense one: seq/s, reduce time, bytes per step.
# Figures come from the metrics files and /usr/bin/time; BENCH_OUT=DIR keeps them.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${1:-$ROOT/runs/scale/s1m.h5}
STEPS=${2:-300}
BIN=${SASREC_DDP:-$ROOT/build/sasrec_ddp}
SYNTH=${SASREC_SYNTH:-$ROOT/build/sasrec_synth}
CONFIG=$ROOT/configs/scale_1m.yaml
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

if [ ! -f "$DATA" ]; then
  mkdir -p "$(dirname "$DATA")"
  echo "generating $DATA (1M users x 1M items, mean length 20)"
  "$SYNTH" --users 1000000 --items 1000000 --mean-length 20 --out "$DATA" > /dev/null
fi
common=(--set data.path="$DATA" --set output.progress=lines --set output.log_every=500)

echo "[1/4] one rank, one epoch + evaluation of 10k users"
/usr/bin/time -v -o "$OUT/one.time" "$BIN" "$CONFIG" "${common[@]}" \
  --set output.metrics="$OUT/one.jsonl" > "$OUT/one.log" 2>&1

echo "[2/4] one rank, $STEPS steps, dense Adam on the item table"
short=(--set train.max_steps="$STEPS" --set eval.protocols=[sampled] --set eval.max_users=100)
/usr/bin/time -v -o "$OUT/dense_adam.time" "$BIN" "$CONFIG" "${common[@]}" "${short[@]}" \
  --set train.item_optimizer=adam --set output.metrics="$OUT/dense_adam.jsonl" > "$OUT/dense_adam.log" 2>&1

for ex in sparse dense; do
  n=$([ $ex = sparse ] && echo 3 || echo 4)
  echo "[$n/4] two ranks, $STEPS steps, exchange $ex"
  mpirun -np 2 --oversubscribe --bind-to none "${ROOT_FLAGS[@]}" -x OMP_WAIT_POLICY \
    bash -c '/usr/bin/time -v -o "$0.$OMPI_COMM_WORLD_RANK" "$@"' "$OUT/np2_$ex.time" \
    "$BIN" "$CONFIG" "${common[@]}" "${short[@]}" --set train.exchange=$ex \
    --set output.metrics="$OUT/np2_$ex.jsonl" > "$OUT/np2_$ex.log" 2>&1
done

python3 - "$OUT" "$DATA.oracle.json" <<'PY'
import json, re, sys, os
out, oracle_path = sys.argv[1], sys.argv[2]
def events(name):
    return [json.loads(l) for l in open(os.path.join(out, name + ".jsonl"))]
def rss_mb(path):
    return int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", open(path).read()).group(1)) / 1024
def train(ev):
    ep = [e for e in ev if e["event"] == "train_epoch"]
    secs = sum(e["seconds"] for e in ep); steps = sum(e["steps"] for e in ep)
    seqs = sum(e["seqs_per_s"] * e["seconds"] for e in ep)
    red = sum(e["phase_seconds"]["reduce"] for e in ep); x = ep[-1]["exchange"]
    return dict(secs=secs, steps=steps, seq_s=seqs / secs, step_ms=1000 * secs / steps, reduce=red, ex=x)
start = events("one")[0]
t1 = train(events("one"))
spe = start["steps_per_epoch"]
print(f"data: {start['users']:,} users, {start['items']:,} items; {start['parameters']:,} parameters; "
      f"{spe} steps/epoch at one rank")
print(f"1 rank, lazy_adam : epoch {t1['secs']:.0f} s, {t1['seq_s']:.0f} seq/s, {t1['step_ms']:.1f} ms/step, "
      f"peak RSS {rss_mb(os.path.join(out, 'one.time')):.0f} MB")
for e in events("one"):
    if e["event"] == "eval":
        print(f"  eval {e['split']}/{e['protocol']}: {e['users']} users in {e['seconds']:.1f} s "
              f"({e.get('users_per_s', e['users'] / max(e['seconds'], 1e-9)):.0f} users/s), "
              f"HR@10 {e['hr@10']:.4f} NDCG@10 {e['ndcg@10']:.4f}")
if os.path.exists(oracle_path):
    o = json.load(open(oracle_path))
    print(f"  generator's oracle (every user's last item, full ranking): HR@10 {o['oracle_hr10']:.4f} "
          f"NDCG@10 {o['oracle_ndcg10']:.4f}; popularity HR@10 {o['popularity_hr10']:.4f}")
d = train(events("dense_adam"))
print(f"1 rank, dense adam: {d['step_ms']:.1f} ms/step ({d['steps']} steps), "
      f"epoch ~{d['step_ms'] * spe / 1000:.0f} s, peak RSS {rss_mb(os.path.join(out, 'dense_adam.time')):.0f} MB; "
      f"lazy_adam is {d['step_ms'] / t1['step_ms']:.2f}x faster per step")
for ex in ("sparse", "dense"):
    t = train(events("np2_" + ex))
    rss = max(rss_mb(os.path.join(out, f"np2_{ex}.time.{r}")) for r in (0, 1))
    x = t["ex"]; spe2 = events("np2_" + ex)[0]["steps_per_epoch"]
    print(f"2 ranks, {ex:6s}: {t['seq_s']:.0f} seq/s, {t['step_ms']:.1f} ms/step ({t['steps']} steps), "
          f"epoch ~{t['step_ms'] * spe2 / 1000:.0f} s; reduce {100 * t['reduce'] / t['secs']:.0f}% of the time; "
          f"{x['bytes_per_step']:,} bytes/step/rank (dense would be {x['dense_bytes_per_step']:,}), "
          f"{x['item_rows_per_step']} item rows/step; peak RSS/rank {rss:.0f} MB")
PY
echo "outputs: $OUT"
