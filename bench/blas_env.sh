# bench/blas_env.sh: sourced by the benchmark scripts after they set BIN (the
# trainer). The Python they compare with (the reference trainer, the GEMM
# rates of bench/gemm_rate.py) computes with the OpenBLAS kernels the trainer
# does: on a CPU Debian's OpenBLAS does not know, the trainer restarts itself
# with better kernels than OpenBLAS chose (include/sasrec/blas_kernels.h), and
# this exports them as OPENBLAS_CORETYPE for everything the script starts.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && [ -x "${BIN:-}" ]; then
  blas_kernels=$("$BIN" --blas-kernels 2>/dev/null) || blas_kernels=""
  [ -z "$blas_kernels" ] || export OPENBLAS_CORETYPE="$blas_kernels"
  unset blas_kernels
fi
