// comm_nccl_unavailable.cpp: what runtime.comm nccl does in a build without
// CUDA Torch or NCCL (CMake compiles this file instead of comm_nccl.cpp).
#include "sasrec/comm.h"
#include "sasrec/error.h"

namespace sasrec {

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator>, int) {
  SASREC_FAIL(Config,
              "runtime.comm is nccl, but this build has no NCCL backend (CMake found no CUDA-enabled Torch "
              "and NCCL). Use runtime.comm mpi, or rebuild against a CUDA Torch with NCCL_ROOT set "
              "(see launch/gpu_check.sh)");
}

}  // namespace sasrec
