#!/usr/bin/env bash
# bench/ce_logits.sh: the rate of loss ce's logits products inside the fused step, against
# bench/gemm_rate.py's rate for the same shapes (into reused outputs), side by side.
#
#   bash bench/ce_logits.sh DATA.h5 [STEPS] [CONFIG]
#
# Trains STEPS steps with bce and with ce (model.kernels fused, 1 thread), twice, alternating;
# the ce step's extra time over bce is its logits: the three products (forward, dh, dM: 3 x 2 N d I
# FLOP) plus the softmax passes, so the rate it gives is a lower bound of the products' own.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${1:?usage: bench/ce_logits.sh DATA.h5 [STEPS] [CONFIG]}
STEPS=${2:-120}
CONFIG=${3:-$ROOT/configs/beauty.yaml}
BIN=${SASREC_DDP:-$ROOT/build/sasrec_ddp}
# shellcheck source=tools/blas_env.sh
source "$ROOT/tools/blas_env.sh"
OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
export OMP_WAIT_POLICY=passive
rates() {
  /usr/bin/python3 -c "import sys; sys.path.insert(0, '$ROOT/bench'); import gemm_rate
print(' '.join(f'{gemm_rate.rate(m, k, n, 1, 2.0, reuse=True):.1f}' for m, k, n in ((733, 50, 12101), (733, 12101, 50), (12101, 733, 50))))"
}
rates > "$OUT/rates_before"
for rep in 1 2; do
  for loss in bce ce; do
    "$BIN" "$CONFIG" --set data.path="$DATA" --set train.epochs=1 --set train.max_steps="$STEPS" \
      --set eval.protocols=[sampled] --set eval.max_users=100 --set output.progress=off --set model.kernels=fused \
      --set train.loss=$loss --set train.threads=1 --set output.metrics="$OUT/${loss}_$rep.jsonl" > /dev/null 2>&1
  done
done
rates > "$OUT/rates_after"
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def ms(name):
    e = [json.loads(l) for l in open(os.path.join(out, name + ".jsonl")) if '"train_epoch"' in l][-1]
    return 1000 * e["seconds"] / e["steps"]
bce = sorted(ms(f"bce_{r}") for r in (1, 2)); ce = sorted(ms(f"ce_{r}") for r in (1, 2))
before = list(map(float, open(os.path.join(out, "rates_before")).read().split()))
after = list(map(float, open(os.path.join(out, "rates_after")).read().split()))
N, d, I = 733, 50, 12101  # Beauty's mean packed tokens a batch, hidden, items
flop = 3 * 2 * N * d * I
extra = min(ce) - min(bce)
# the machine's rate for the three shapes: FLOP-weighted (they have equal FLOP), i.e. the harmonic mean
machine = 3 / sum(1 / ((b + a) / 2) for b, a in zip(before, after))
print(f"fused step: bce {min(bce):.2f} ms, ce {min(ce):.2f} ms (best of 2); ce's logits {extra:.2f} ms for {flop / 1e9:.2f} GFLOP")
print(f"gemm_rate.py, same shapes, reused outputs: {before} before, {after} after (GFLOP/s): {machine:.1f} together")
print(f"logits in the step: {flop / extra / 1e6:.1f} GFLOP/s = {100 * flop / extra / 1e6 / machine:.0f}% of the machine's rate "
      f"(softmax passes included)")
PY
