#!/usr/bin/env bash
# launch/mpirun_cpu.sh: N ranks of sasrec_ddp on one CPU machine.
#
#   NP=4 bash launch/mpirun_cpu.sh configs/beauty.yaml [--set key=value ...]
#
# Each rank gets nproc/NP intra-op threads so the ranks do not oversubscribe
# the cores; OpenMP threads wait passively (spinning ranks starve each other).
# The global batch is NP x train.batch_size.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NP=${NP:-2}
THREADS=${THREADS:-$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))}
ROOT_FLAGS=()
[ "$(id -u)" -eq 0 ] && ROOT_FLAGS=(--allow-run-as-root)
exec mpirun -np "$NP" --oversubscribe --bind-to none "${ROOT_FLAGS[@]}" \
  -x OMP_NUM_THREADS="$THREADS" -x OMP_WAIT_POLICY=passive \
  "${SASREC_DDP:-$ROOT/build/sasrec_ddp}" "$@" --set train.threads="$THREADS"
