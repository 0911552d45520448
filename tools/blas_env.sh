# tools/blas_env.sh: sourced by the benchmark scripts and tools/dev.sh after
# they set BIN (the trainer). On a CPU Debian's OpenBLAS does not know, the
# trainer restarts itself with better kernels than OpenBLAS chose
# (include/sasrec/blas_kernels.h); this exports them as OPENBLAS_CORETYPE for
# everything the script starts: the Python a benchmark compares with (the
# reference trainer, bench/gemm_rate.py) and the tests then compute with the
# trainer's kernels, and nothing restarts.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -x "${BIN:-}" ]; then
  blas_kernels=$("$BIN" --blas-kernels 2>/dev/null) || blas_kernels=""
  [ -z "$blas_kernels" ] || export OPENBLAS_CORETYPE="$blas_kernels"
  unset blas_kernels
fi
