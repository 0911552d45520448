#!/usr/bin/env bash
# bench/step_speed.sh: the training step, model.kernels fused against autograd,
# side by side in one run (alternating, so a busy machine slows both alike).
#
#   bash bench/step_speed.sh DATA.h5 [REPEATS] [CONFIG] [--set key=value ...]
#
# Each repeat trains 2 epochs four ways (kernels autograd / fused x threads
# 1 / 2) and reads the second epoch from the metrics file: ms per step (wall),
# sequences/s, the phases (waiting for the sampler, forward, backward, reduce,
# optimizer step), and the CPU time of the sampler thread per batch (from
# /proc, the busiest thread besides the main one; with threads 2 the OpenMP
# worker is told apart by the main thread's id). Then one profiled run per
# kernel (steps 11-60, tools/profile_table.py): libtorch op calls per step on
# the training thread. CONFIG defaults to configs/beauty.yaml (the paper's
# hyperparameters). BENCH_OUT=DIR keeps every metrics file, log and profile.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${1:?usage: bench/step_speed.sh DATA.h5 [REPEATS] [CONFIG] [--set key=value ...]}
REPEATS=${2:-2}
CONFIG=${3:-$ROOT/configs/beauty.yaml}
shift $(( $# < 3 ? $# : 3 ))
BIN=${SASREC_DDP:-$ROOT/build/sasrec_ddp}
OUT=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
[ -n "${BENCH_OUT:-}" ] || trap 'rm -rf "$OUT"' EXIT
export OMP_WAIT_POLICY=passive
common=(--set data.path="$DATA" --set train.epochs=2 --set eval.protocols=[sampled] --set eval.max_users=100
        --set output.progress=off "$@")

# run NAME [--set ...]: one training; the last per-thread CPU snapshot (tid utime+stime ticks) in NAME.threads.
run() {
  local name=$1; shift
  "$BIN" "$CONFIG" "${common[@]}" --set output.metrics="$OUT/$name.jsonl" "$@" > "$OUT/$name.log" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    snap=$(for t in /proc/$pid/task/*; do
             [ -r "$t/stat" ] && awk -v tid="${t##*/}" '{print tid, $14 + $15}' "$t/stat" 2>/dev/null
           done) || true
    [ -n "$snap" ] && printf '%s\n' "$snap" > "$OUT/$name.threads.tmp" && mv "$OUT/$name.threads.tmp" "$OUT/$name.threads"
    echo "$pid" > "$OUT/$name.pid"
    sleep 0.2
  done
  wait "$pid"
}

for rep in $(seq 1 "$REPEATS"); do
  for threads in 1 2; do
    for kernels in autograd fused; do
      echo "repeat $rep: kernels $kernels, $threads thread(s)"
      run "${kernels}_t${threads}_r$rep" --set model.kernels=$kernels --set train.threads=$threads
    done
  done
done
for kernels in autograd fused; do
  echo "profile: kernels $kernels, 1 thread"
  "$BIN" "$CONFIG" "${common[@]}" --set model.kernels=$kernels --set train.threads=1 --set train.max_steps=80 \
    --set output.profile="$OUT/profile_$kernels.json" --set output.metrics="$OUT/profile_$kernels.jsonl" \
    > "$OUT/profile_$kernels.log" 2>&1
  python3 "$ROOT/tools/profile_table.py" "$OUT/profile_$kernels.json" --top 12 > "$OUT/profile_$kernels.txt"
done

python3 - "$OUT" "$REPEATS" <<'PY'
import json, os, sys, collections
out, repeats = sys.argv[1], int(sys.argv[2])
HZ = os.sysconf("SC_CLK_TCK")
rows = collections.defaultdict(list)
for name in sorted(os.listdir(out)):
    if not name.endswith(".jsonl") or name.startswith("profile"):
        continue
    key = name[:-6].rsplit("_r", 1)[0]
    ev = [json.loads(l) for l in open(os.path.join(out, name))]
    ep = [e for e in ev if e["event"] == "train_epoch"][-1]
    steps = ep["steps"]
    ph = {k: 1000 * v / steps for k, v in ep["phase_seconds"].items()}
    # The sampler thread: the busiest thread that is neither the main one nor (2 threads) the OpenMP worker,
    # over the whole run; batches = 2 epochs' steps plus what it built ahead (prefetch, at most 8).
    base = name[:-6]
    threads = [tuple(map(int, l.split())) for l in open(os.path.join(out, base + ".threads"))]
    pid = int(open(os.path.join(out, base + ".pid")).read())
    others = sorted((t for t in threads if t[0] != pid), key=lambda t: -t[1])
    total_steps = 2 * steps
    sampler_ms = None
    if others:
        # threads 1: the sampler is the busiest other thread; threads 2: the worker does as much as main, so
        # take the busiest other thread whose CPU time is below main's half (the sampler is far cheaper)
        main = next(t[1] for t in threads if t[0] == pid)
        cand = [t for t in others if t[1] < 0.5 * main] if "_t2" in base else others
        if cand:
            sampler_ms = 1000 * cand[0][1] / HZ / total_steps
    rows[key].append(dict(ms=1000 * ep["seconds"] / steps, sps=ep["seqs_per_s"], sample=ph["sample"],
                          fwd=ph["forward"], bwd=ph["backward"], red=ph["reduce"], opt=ph["step"], smp=sampler_ms))
print(f"{'kernels, threads':20}{'ms/step':>9}{'seq/s':>9}{'wait':>7}{'fwd':>7}{'bwd':>7}{'reduce':>7}{'adam':>7}"
      f"{'sampler':>9}   (median of {repeats}; phases ms/step; sampler CPU ms/batch)")
med = {}
for key in sorted(rows):
    r = rows[key]
    m = lambda f: sorted(x[f] for x in r)[len(r) // 2]
    smp = [x["smp"] for x in r if x["smp"] is not None]
    med[key] = m("sps")
    print(f"{key:20}{m('ms'):9.2f}{m('sps'):9.0f}{m('sample'):7.2f}{m('fwd'):7.2f}{m('bwd'):7.2f}{m('red'):7.2f}"
          f"{m('opt'):7.2f}{(sorted(smp)[len(smp) // 2] if smp else float('nan')):9.3f}")
for t in (1, 2):
    a, f = med.get(f"autograd_t{t}"), med.get(f"fused_t{t}")
    if a and f:
        print(f"fused / autograd, {t} thread(s): {f / a:.2f}x sequences/s")
for k in ("autograd", "fused"):
    one, two = med.get(f"{k}_t1"), med.get(f"{k}_t2")
    if one and two:
        print(f"{k}: 2 threads / 1 thread: {two / one:.2f}x sequences/s")
for k in ("autograd", "fused"):
    with open(os.path.join(out, f"profile_{k}.txt")) as f:
        lines = f.read().splitlines()
    print(f"profile, {k}: " + " ".join(lines[1:2]))
PY
echo "outputs: $OUT"
