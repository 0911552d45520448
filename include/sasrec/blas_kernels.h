// blas_kernels.h: the BLAS kernels this process computes with.
//
// OpenBLAS chooses its kernels once, when it is loaded, from the CPU's family
// and model. Debian 12's OpenBLAS (0.3.21) does not know newer models, Intel's
// Emerald Rapids (family 6, model 207) among them, and falls back to its
// Prescott (SSE3) kernels: on such a CPU a 512^3 SGEMM runs at 20 GFLOP/s
// against 145 with the SkylakeX (AVX-512) kernels the CPU can run
// (docs/results.md, "The BLAS kernels"). The environment variable
// OPENBLAS_CORETYPE chooses the kernels, but only before the library is
// loaded, so the remedy is to start the program again with it set.
#pragma once

#include <string>

namespace sasrec {

// The kernels OpenBLAS runs with ("SkylakeX", "Haswell", "Prescott", ...);
// "" when the BLAS loaded is not OpenBLAS.
std::string blas_kernels();

// The OPENBLAS_CORETYPE this process should have been started with, or ""
// when there is nothing to mend: OpenBLAS fell back to Prescott,
// OPENBLAS_CORETYPE is not set (a user's choice is kept), and the CPU runs
// AVX-512 (F, BW, DQ, VL: "SkylakeX") or AVX2 with FMA ("Haswell").
std::string better_blas_kernels();

// First thing in main(), before any thread or MPI_Init: when
// better_blas_kernels() names kernels, sets OPENBLAS_CORETYPE to them, says so
// on stderr (`quiet`: not) and executes this program again with the same
// arguments (/proc/self/exe). Returns when there is nothing to mend, or when
// the exec failed (the program then goes on with the slow kernels, after a
// message). The variable set, the new start finds nothing to mend.
void restart_with_better_blas(char** argv, bool quiet = false);

}  // namespace sasrec
