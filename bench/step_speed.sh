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
# shellcheck source=tools/blas_env.sh
source "$ROOT/tools/blas_env.sh"
OUT=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
[ -n "${BENCH_OUT:-}" ] || trap 'rm -rf "$OUT"' EXIT
export OMP_WAIT_POLICY=passive
common=(--set data.path="$DATA" --set train.epochs=2 --set eval.protocols=[sampled] --set eval.max_users=100
        --set output.progress=off "$@")

# run NAME [--set ...]: one training; every 0.1 s each thread's CPU time so far (ns, /proc/.../schedstat)
# appended to NAME.threads as "snapshot tid ns".
run() {
  local name=$1; shift
  "$BIN" "$CONFIG" "${common[@]}" --set output.metrics="$OUT/$name.jsonl" "$@" > "$OUT/$name.log" 2>&1 &
  local pid=$! n=0
  echo "$pid" > "$OUT/$name.pid"
  : > "$OUT/$name.threads"
  while kill -0 "$pid" 2>/dev/null; do
    n=$((n + 1))
    for t in /proc/$pid/task/*; do
      read -r ns _ < "$t/schedstat" 2>/dev/null && echo "$n ${t##*/} $ns" >> "$OUT/$name.threads"
    done
    sleep 0.1
  done
  wait "$pid"
}

# This machine's GEMM rate for a projection of the step, now (the floor's denominator), before and after.
gemm_rate() {
  /usr/bin/python3 -c "import sys; sys.path.insert(0, '$ROOT/bench'); import gemm_rate; print(f'{gemm_rate.rate(733, 50, 50, 1, 2.0):.1f}')"
}
gemm_rate > "$OUT/gemm_before"
for rep in $(seq 1 "$REPEATS"); do
  for threads in 1 2; do
    for kernels in autograd fused; do
      echo "repeat $rep: kernels $kernels, $threads thread(s)"
      run "${kernels}_t${threads}_r$rep" --set model.kernels=$kernels --set train.threads=$threads
    done
  done
done
gemm_rate > "$OUT/gemm_after"
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
    # The sampler threads (one per epoch, data.sampler_threads 1) are the threads that end before the run
    # does, the main thread and OpenMP's workers last to its end; their CPU time over all batches built
    # (2 epochs, plus the prefetch of the last: at most 8 more).
    base = name[:-6]
    pid = int(open(os.path.join(out, base + ".pid")).read())
    last, seen = {}, collections.defaultdict(int)
    for l in open(os.path.join(out, base + ".threads")):
        snap, tid, ns = map(int, l.split())
        seen[tid] = max(seen[tid], ns)
        last[tid] = snap
    final = max(last.values())
    sampler_ns = sum(ns for tid, ns in seen.items() if tid != pid and last[tid] < final)
    sampler_ms = 1e-6 * sampler_ns / (2 * steps) if sampler_ns else None
    rows[key].append(dict(ms=1000 * ep["seconds"] / steps, sps=ep["seqs_per_s"], sample=ph["sample"],
                          fwd=ph["forward"], bwd=ph["backward"], red=ph["reduce"], opt=ph["step"], smp=sampler_ms))
print(f"{'kernels, threads':20}{'ms/step':>9}{'seq/s':>9}{'wait':>7}{'fwd':>7}{'bwd':>7}{'reduce':>7}{'adam':>7}"
      f"{'sampler':>9}   (median of {repeats}; phases ms/step; sampler CPU ms/batch)")
med = {}
for key in sorted(rows):
    x = sorted(rows[key], key=lambda x: x["ms"])[len(rows[key]) // 2]  # the repeat with the median ms/step
    med[key] = x["sps"]
    smp = x["smp"] if x["smp"] is not None else float("nan")
    print(f"{key:20}{x['ms']:9.2f}{x['sps']:9.0f}{x['sample']:7.2f}{x['fwd']:7.2f}{x['bwd']:7.2f}{x['red']:7.2f}"
          f"{x['opt']:7.2f}{smp:9.3f}")
for t in (1, 2):
    a, f = med.get(f"autograd_t{t}"), med.get(f"fused_t{t}")
    if a and f:
        print(f"fused / autograd, {t} thread(s): {f / a:.2f}x sequences/s")
for k in ("autograd", "fused"):
    one, two = med.get(f"{k}_t1"), med.get(f"{k}_t2")
    if one and two:
        print(f"{k}: 2 threads / 1 thread: {two / one:.2f}x sequences/s")
rates = [float(open(os.path.join(out, f)).read()) for f in ("gemm_before", "gemm_after")]
rate = sum(rates) / 2
# The floor of a step of the paper's model on Beauty (docs/results.md): 122 MFLOP at the GEMM rate of a
# 733 x 50 x 50 projection measured now; the item table's dense Adam (14.5 MB a step) is not in it.
floor = 122e6 / (rate * 1e9) * 1000
print(f"GEMM 733 x 50 x 50, 1 thread: {rates[0]:.1f} / {rates[1]:.1f} GFLOP/s (before / after); "
      f"Beauty floor {floor:.2f} ms/step")
for t in (1, 2):
    for k in ("autograd", "fused"):
        key = f"{k}_t{t}"
        if key in med:
            x = sorted(rows[key], key=lambda x: x["ms"])[len(rows[key]) // 2]
            print(f"{key}: {x['ms'] / floor:.2f}x the 1-thread floor")
for k in ("autograd", "fused"):
    with open(os.path.join(out, f"profile_{k}.txt")) as f:
        lines = f.read().splitlines()
    print(f"profile, {k}: " + " ".join(lines[1:2]))
PY
echo "outputs: $OUT"
