#!/usr/bin/env bash
# bench/vs_reference.sh: our trainer and the PyTorch reference side by side,
# same data, hyperparameters (the paper's Amazon ones), epochs and threads,
# in one run; prints speed, test metrics and the speed ratio.
#
#   bash bench/vs_reference.sh ../shared/bench/torch_reference.py ../shared/data/Beauty.txt [EPOCHS] [THREADS] [LOSS]
#
# The reference needs Debian's python3-torch and python3-numpy (/usr/bin/python3);
# installed here when missing (as root).
# Both train with BCE unless LOSS says otherwise for ours (the reference only has BCE).
# BENCH_OUT=DIR keeps the reference's JSON and our metrics and log there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REF=${1:?usage: bench/vs_reference.sh REFERENCE.py DATA.txt [EPOCHS] [THREADS] [LOSS]}
DATA=${2:?usage: bench/vs_reference.sh REFERENCE.py DATA.txt [EPOCHS] [THREADS] [LOSS]}
EPOCHS=${3:-20}
THREADS=${4:-$(nproc)}
LOSS=${5:-bce}
BUILD=${SASREC_BUILD_DIR:-$ROOT/build}
if [ -n "${BENCH_OUT:-}" ]; then  # keep both runs' outputs there
  OUT=$BENCH_OUT; mkdir -p "$OUT"
else
  OUT=$(mktemp -d); trap 'rm -rf "$OUT"' EXIT
fi
export OMP_WAIT_POLICY=passive
BIN=$BUILD/sasrec_ddp
# shellcheck source=tools/blas_env.sh
source "$ROOT/tools/blas_env.sh"

if ! /usr/bin/python3 -c "import torch, numpy" 2>/dev/null; then
  [ "$(id -u)" -eq 0 ] || { echo "vs_reference.sh: the reference needs python3-torch and python3-numpy: apt-get install python3-torch python3-numpy" >&2; exit 2; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-torch python3-numpy >/dev/null
fi

"$BUILD/csv2h5" "$DATA" "$OUT/data.h5" --format seq >/dev/null
start=$EPOCHREALTIME
OMP_NUM_THREADS=$THREADS /usr/bin/python3 "$REF" "$DATA" --epochs "$EPOCHS" --threads "$THREADS" --eval \
  > "$OUT/reference.json"
ref_wall=$(python3 -c "print($EPOCHREALTIME - $start)")
start=$EPOCHREALTIME
"$BUILD/sasrec_ddp" "$ROOT/configs/amazon.yaml" --set data.path="$OUT/data.h5" --set train.epochs="$EPOCHS" \
  --set train.threads="$THREADS" --set train.loss="$LOSS" --set eval.every=0 \
  --set output.metrics="$OUT/ours.jsonl" > "$OUT/ours.log"
ours_wall=$(python3 -c "print($EPOCHREALTIME - $start)")

python3 - "$OUT/reference.json" "$OUT/ours.jsonl" "$ref_wall" "$ours_wall" "$EPOCHS" "$THREADS" "$LOSS" <<'PY'
import json, sys
ref = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ev = [json.loads(l) for l in open(sys.argv[2])]
epochs = [e for e in ev if e["event"] == "train_epoch"]
test = {e["protocol"]: e for e in ev if e["event"] == "eval" and e["split"] == "test"}
seqs = sum(e["seqs_per_s"] * e["seconds"] for e in epochs); secs = sum(e["seconds"] for e in epochs)
ours_sps = seqs / secs
print(f"{sys.argv[5]} epochs, {sys.argv[6]} threads, ours with loss {sys.argv[7]}")
print(f"{'':22}{'seq/s':>9}{'train s':>9}{'wall s':>8}{'full HR@10':>11}{'NDCG@10':>9}{'smp HR@10':>10}{'NDCG@10':>9}")
print(f"{'torch_reference.py':22}{ref['sequences_per_s']:9.0f}{ref['seconds']:9.1f}{float(sys.argv[3]):8.1f}"
      f"{ref['full_hr10']:11.4f}{ref['full_ndcg10']:9.4f}{ref['sampled_hr10']:10.4f}{ref['sampled_ndcg10']:9.4f}")
print(f"{'sasrec_ddp':22}{ours_sps:9.0f}{secs:9.1f}{float(sys.argv[4]):8.1f}"
      f"{test['full']['hr@10']:11.4f}{test['full']['ndcg@10']:9.4f}{test['sampled']['hr@10']:10.4f}{test['sampled']['ndcg@10']:9.4f}")
print(f"speed ratio (ours / reference, sequences/s): {ours_sps / ref['sequences_per_s']:.2f}")
PY
