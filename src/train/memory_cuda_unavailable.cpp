// memory_cuda_unavailable.cpp: a build without CUDA knows no device memory
// (memory_plan.h); memory_cuda.cpp is the CUDA build's.
#include "sasrec/memory_plan.h"

namespace sasrec::detail {

int64_t cuda_free_memory(int /*index*/) { return -1; }

}  // namespace sasrec::detail
