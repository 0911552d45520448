#!/usr/bin/env bash
# bench/scaling_cpu.sh: one rank with T threads against T ranks with 1 thread
# each, same global batch, on one machine; prints sequences/s, seconds in
# communication and bytes all-reduced per step, and the ratio, measured in
# one run of this script.
#
#   bash bench/scaling_cpu.sh DATA.h5 [CONFIG] [STEPS]
#   e.g. build/csv2h5 ../shared/data/Beauty.txt /tmp/beauty.h5 --format seq
#        bash bench/scaling_cpu.sh /tmp/beauty.h5 configs/beauty.yaml 300
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA=${1:?usage: bench/scaling_cpu.sh DATA.h5 [CONFIG] [STEPS]}
CONFIG=${2:-$ROOT/configs/beauty.yaml}
STEPS=${3:-300}
T=${T:-$(nproc)}
BIN=${SASREC_DDP:-$ROOT/build/sasrec_ddp}
# shellcheck source=tools/blas_env.sh
source "$ROOT/tools/blas_env.sh"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export OMP_WAIT_POLICY=passive
ROOT_FLAGS=()
[ "$(id -u)" -eq 0 ] && ROOT_FLAGS=(--allow-run-as-root)
BATCH=128
common=(--set data.path="$DATA" --set train.max_steps="$STEPS" --set train.epochs=1000
        --set eval.protocols=[sampled] --set eval.max_users=200)

"$BIN" "$CONFIG" "${common[@]}" --set train.batch_size=$BATCH --set train.threads="$T" \
  --set output.metrics="$OUT/np1.jsonl" > "$OUT/np1.log"
mpirun -np "$T" --oversubscribe --bind-to none "${ROOT_FLAGS[@]}" -x OMP_WAIT_POLICY \
  "$BIN" "$CONFIG" "${common[@]}" --set train.batch_size=$((BATCH / T)) --set train.threads=1 \
  --set output.metrics="$OUT/npT.jsonl" > "$OUT/npT.log"

python3 - "$OUT/np1.jsonl" "$OUT/npT.jsonl" "$T" <<'PY'
import json, sys
def totals(path):
    seqs = secs = comm = 0.0; steps = 0; bytes_ = 0
    for line in open(path):
        e = json.loads(line)
        if e["event"] == "train_epoch":
            seqs += e["seqs_per_s"] * e["seconds"]; secs += e["seconds"]; steps += e["steps"]
            comm += e["phase_seconds"]["reduce"]; bytes_ = e["exchange"]["bytes_per_step"]
    return seqs / secs, comm, steps, bytes_, secs
a = totals(sys.argv[1]); b = totals(sys.argv[2]); t = sys.argv[3]
print(f"-np 1 x {t} threads: {a[0]:8.0f} seq/s  {a[4]:6.1f} s for {a[2]} steps  comm {a[1]:5.2f} s")
print(f"-np {t} x 1 thread : {b[0]:8.0f} seq/s  {b[4]:6.1f} s for {b[2]} steps  comm {b[1]:5.2f} s "
      f"({100*b[1]/b[4]:.1f}% of the time), {b[3]:,} bytes exchanged per step and rank")
print(f"ratio (np {t} / np 1): {b[0]/a[0]:.2f}")
PY
