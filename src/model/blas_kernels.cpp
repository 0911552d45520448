// blas_kernels.cpp: OpenBLAS's kernel choice, and the restart that mends it
// (see blas_kernels.h).
#include "sasrec/blas_kernels.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace sasrec {

std::string blas_kernels() {
  // Looked up, not linked: the BLAS may be another library (then "").
  using CoreName = char* (*)();
  auto corename = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* name = corename ? corename() : nullptr;
  return name ? name : "";
}

std::string better_blas_kernels() {
  if (const char* set = std::getenv("OPENBLAS_CORETYPE"); set && *set) return "";  // a choice made
  if (blas_kernels() != "Prescott") return "";
#if defined(__x86_64__) && defined(__GNUC__)
  // __builtin_cpu_supports checks that the operating system saves the vector registers too.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

void restart_with_better_blas(char** argv, bool quiet) {
  const std::string kernels = better_blas_kernels();
  if (kernels.empty()) return;
  if (setenv("OPENBLAS_CORETYPE", kernels.c_str(), 1) != 0) return;
  if (!quiet)
    std::fprintf(stderr,
                 "OpenBLAS chose its Prescott (SSE3) kernels for this CPU, several times slower than the %s kernels "
                 "it can run: starting again with OPENBLAS_CORETYPE=%s (set OPENBLAS_CORETYPE to choose)\n",
                 kernels.c_str(), kernels.c_str());
  std::fflush(nullptr);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "could not start again with OPENBLAS_CORETYPE=%s (%s); going on with the Prescott kernels\n",
               kernels.c_str(), std::strerror(errno));
}

}  // namespace sasrec
