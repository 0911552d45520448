# bench/common.sh: sourced by the benchmark scripts after they set ROOT.
# OUT is BENCH_OUT (kept) or a temporary folder (removed at exit); the
# OpenMP threads sleep when they wait (ranks share the cores); ROOT_FLAGS
# lets mpirun start as root.
OUT=${BENCH_OUT:-$(mktemp -d)}
mkdir -p "$OUT"
[ -n "${BENCH_OUT:-}" ] || trap 'rm -rf "$OUT"' EXIT
export OMP_WAIT_POLICY=passive
# shellcheck source=tools/blas_env.sh
source "$ROOT/tools/blas_env.sh"
ROOT_FLAGS=()
[ "$(id -u)" -eq 0 ] && ROOT_FLAGS=(--allow-run-as-root)
# five_epochs BIN DATA CONFIG THREADS NAME [--set key=value ...]: the step-speed scripts' run (5 epochs,
# at the end a 100-user sampled evaluation), its metrics in $OUT/NAME.jsonl and its output in
# $OUT/NAME.log; on failure the log's end on stderr, and the status.
five_epochs() {
  local bin=$1 data=$2 config=$3 threads=$4 name=$5
  shift 5
  "$bin" "$config" --set data.path="$data" --set train.epochs=5 --set eval.every=0 \
    --set eval.protocols=[sampled] --set eval.max_users=100 --set output.progress=off \
    --set train.threads="$threads" --set output.metrics="$OUT/$name.jsonl" "$@" > "$OUT/$name.log" 2>&1 ||
    { local rc=$?; echo "$bin failed, its output ending (BENCH_OUT=DIR keeps it whole):" >&2
      tail -n 5 "$OUT/$name.log" >&2; return $rc; }
}
