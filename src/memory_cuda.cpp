// memory_cuda.cpp: a CUDA device's free memory for the memory plan
// (memory_plan.h). Built when Torch has CUDA; memory_cuda_unavailable.cpp otherwise.
#include <c10/cuda/CUDAGuard.h>
#include <cuda_runtime_api.h>

#include "sasrec/memory_plan.h"

namespace sasrec::detail {

int64_t cuda_free_memory(int index) {
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(index));
  size_t free = 0, total = 0;
  if (cudaMemGetInfo(&free, &total) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: the plan then has no budget, training goes on
    return -1;
  }
  return static_cast<int64_t>(free);
}

}  // namespace sasrec::detail
