// memory_cuda.cpp: a CUDA device's free memory for the memory plan
// (memory_plan.h). Built when Torch has CUDA; memory_cuda_unavailable.cpp
// otherwise. Only the CUDA runtime API (stable across CUDA 11-13 and the
// Torch versions built on them), no c10 CUDA headers.
#include <cuda_runtime_api.h>

#include "sasrec/memory_plan.h"

namespace sasrec::detail {

int64_t cuda_free_memory(int index) {
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: the plan then has no budget, training goes on
    return -1;
  }
  size_t free = 0, total = 0;
  const bool ok = cudaSetDevice(index) == cudaSuccess && cudaMemGetInfo(&free, &total) == cudaSuccess;
  if (!ok) (void)cudaGetLastError();
  (void)cudaSetDevice(previous);
  return ok ? static_cast<int64_t>(free) : -1;
}

}  // namespace sasrec::detail
