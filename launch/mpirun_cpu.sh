#!/usr/bin/env bash
# launch/mpirun_cpu.sh: N ranks of sasrec_ddp on one CPU machine.
#
#   NP=4 bash launch/mpirun_cpu.sh configs/beauty.yaml [--set key=value ...]
#
# Each rank gets nproc/NP intra-op threads so the ranks do not oversubscribe
# the cores; OpenMP threads wait passively (spinning ranks starve each other).
# The global batch is NP x train.batch_size.
#
# SIGTERM / SIGINT to this script go to the ranks themselves, not to mpirun:
# Open MPI 4.1's mpirun answers its own SIGTERM by killing the job (SIGTERM
# to every rank, SIGKILL odls_base_sigkill_timeout = 1 s later) and exits 1,
# which can cut a large checkpoint short. The ranks instead finish the step
# in flight, rank 0 writes the checkpoint, all exit 3, and so does this
# script (docs/reliability.md). A second signal is passed on the same way.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NP=${NP:-2}
THREADS=${THREADS:-$(( $(nproc) / NP > 0 ? $(nproc) / NP : 1 ))}
ROOT_FLAGS=()
[ "$(id -u)" -eq 0 ] && ROOT_FLAGS=(--allow-run-as-root)
mpirun -np "$NP" --oversubscribe --bind-to none "${ROOT_FLAGS[@]}" \
  -x OMP_NUM_THREADS="$THREADS" -x OMP_WAIT_POLICY=passive \
  "${SASREC_DDP:-$ROOT/build/sasrec_ddp}" "$@" --set train.threads="$THREADS" &
launcher=$!
# The ranks are mpirun's children on one machine.
to_ranks() { for rank in $(pgrep -P "$launcher" 2>/dev/null); do kill "-$1" "$rank" 2>/dev/null || true; done; }
trap 'to_ranks TERM' TERM
trap 'to_ranks INT' INT
status=0
while true; do
  # wait returns early (>128) when a trapped signal arrives; go on waiting for mpirun itself.
  wait "$launcher" && status=0 || status=$?
  kill -0 "$launcher" 2>/dev/null || break
done
exit "$status"
