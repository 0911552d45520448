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
