#!/usr/bin/env bash
# bench/scale_floor.sh: the 1M-item sampled-softmax step (configs/scale_1m.yaml) against its floor,
# model.kernels fused and autograd side by side.
#
#   bash bench/scale_floor.sh DATA.h5 [STEPS]      (DATA: bench/scale.sh's 1M x 1M store)
#
# The step's time is that of steps STEPS+1 to 2 x STEPS of a run of 2 x STEPS.
#
# The floor: the step's FLOPs (2,172 tokens a batch, from the generator's lengths: 3 + geometric(17)
# capped at maxlen 50; 844.5 MFLOP with d = 64, 2 blocks, K = 256) at the rate of a 2172 x 64 x 64
# GEMM, plus the item rows (about 4,500 distinct rows of 256 B a step, each gathered once and stepped
# by lazy Adam: ~7 row moves) at the measured time of moving one random 256 B row of a 1M x 64 table.
# Both rates are measured before and after the runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${1:?usage: bench/scale_floor.sh DATA.h5 [STEPS]}
STEPS=${2:-200}
BIN=${SASREC_DDP:-$ROOT/build/sasrec_ddp}
# shellcheck source=tools/blas_env.sh
source "$ROOT/tools/blas_env.sh"
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
export OMP_WAIT_POLICY=passive
rates() {
  /usr/bin/python3 - "$ROOT/bench" <<'PY'
import sys, time, torch
sys.path.insert(0, sys.argv[1]); import gemm_rate
r = gemm_rate.rate(2172, 64, 64, 1, 2.0)
torch.set_num_threads(1)
# Into one reused output, as the trainer gathers into its arena: a fresh 25.6 MB output each call
# measures its page faults instead (0.8 us a row here against 0.05).
M = torch.randn(1 << 20, 64); idx = torch.randint(0, 1 << 20, (100000,)); rows = torch.empty(100000, 64)
for _ in range(2): torch.index_select(M, 0, idx, out=rows)
times = []
for _ in range(7):
    t = time.perf_counter()
    torch.index_select(M, 0, idx, out=rows)
    times.append(time.perf_counter() - t)
print(r, sorted(times)[3] / 100000 * 1e6)
PY
}
rates > "$OUT/before"
# Each kernel 2 x STEPS steps, timed over the second STEPS (the log's clock at steps STEPS and
# 2 x STEPS, 0.1 s resolution): without the start and the first touch of the 512 MB of Adam's
# moments, which the first 100 steps pay (1.8 s of their Adam phase here). The phases are the run's.
for k in fused autograd; do
  "$BIN" "$ROOT/configs/scale_1m.yaml" --set data.path="$DATA" --set train.max_steps=$((2 * STEPS)) \
    --set eval.protocols=[sampled] --set eval.max_users=100 --set output.progress=lines \
    --set output.log_every="$STEPS" --set model.kernels=$k --set output.metrics="$OUT/$k.jsonl" > "$OUT/$k.log" 2>&1
done
rates > "$OUT/after"
python3 - "$OUT" "$STEPS" <<'PY'
import json, os, re, sys
out, steps = sys.argv[1], int(sys.argv[2])
b = list(map(float, open(os.path.join(out, "before")).read().split()))
a = list(map(float, open(os.path.join(out, "after")).read().split()))
rate, row_us = (b[0] + a[0]) / 2, (b[1] + a[1]) / 2
flops_ms = 844.5e6 / (rate * 1e9) * 1000
rows_ms = 7 * 4500 * row_us / 1000
floor = flops_ms + rows_ms
print(f"GEMM 2172 x 64 x 64: {b[0]:.1f} / {a[0]:.1f} GFLOP/s, random 256 B row: {b[1]:.3f} / {a[1]:.3f} us (before / after)")
print(f"floor: {flops_ms:.1f} ms of FLOPs + {rows_ms:.1f} ms of rows = {floor:.1f} ms a step")
def clock_at(k, step):  # "[   12.3s] epoch 1/1  step S/..." lines of the log
    for line in open(os.path.join(out, k + ".log")):
        m = re.match(r"\[\s*([0-9.]+)s\] epoch \S+\s+step (\d+)/", line)
        if m and int(m.group(2)) == step:
            return float(m.group(1))
    sys.exit(f"scale_floor.sh: no log line for step {step} in {out}/{k}.log")
for k in ("fused", "autograd"):
    e = [json.loads(l) for l in open(os.path.join(out, k + ".jsonl")) if '"train_epoch"' in l][-1]
    ms = 1000 * (clock_at(k, 2 * steps) - clock_at(k, steps)) / steps
    whole = 1000 * e["seconds"] / e["steps"]
    ph = {p: round(1000 * v / e["steps"], 2) for p, v in e["phase_seconds"].items()}
    print(f"{k:9}: {ms:.1f} ms/step = {ms / floor:.2f}x the floor (steps {steps + 1}-{2 * steps}); "
          f"all {e['steps']} steps {whole:.1f} ms/step, phases {ph}")
PY
