// comm.h: the one communicator interface of the data-parallel trainer.
//
// Backends, each in its own source file chosen by CMake:
//   single  (comm.cpp)      world size 1, every collective a no-op; unit tests
//                           and plain single-rank runs use it, no MPI needed
//   mpi     (comm_mpi.cpp)  CPU tensors, MPI_Allreduce in place
//   nccl    (comm_nccl.cpp) CUDA tensors; built only with a CUDA Torch + NCCL
// Every rank must issue the same collectives in the same order.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace sasrec {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual std::string name() const = 0;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual int local_rank() const = 0;  // rank among the processes of this node
  // In place, contiguous tensors of one dtype on every rank.
  virtual void allreduce_sum(torch::Tensor& t) = 0;
  virtual void broadcast(torch::Tensor& t, int root) = 0;
  // Concatenation along dim 0 of every rank's tensor (sizes may differ), in rank order.
  virtual torch::Tensor allgather(const torch::Tensor& t) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job now (a failing rank calls it so none hangs).
  [[noreturn]] virtual void abort(int exit_code) = 0;

  bool is_root() const { return rank() == 0; }
  void allreduce_sum(std::vector<double>& values);  // convenience over a float64 tensor
  double allreduce_sum(double value);
  int64_t allreduce_sum(int64_t value);
};

// World size 1.
std::unique_ptr<Communicator> make_single_communicator();
// MPI_COMM_WORLD; initializes MPI if needed (finalized at exit).
std::unique_ptr<Communicator> make_mpi_communicator();
// NCCL over CUDA tensors on `device`; `bootstrap` (MPI) broadcasts the NCCL
// id and carries the CPU-side collectives. A build without CUDA Torch and
// NCCL throws a config error saying how to get one.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap, int device);
// True when this process was started by an MPI launcher (mpirun, srun).
bool launched_by_mpi();

}  // namespace sasrec
