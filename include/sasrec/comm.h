// comm.h: the one communicator interface of the data-parallel trainer.
//
// Backends, each in its own source file chosen by CMake:
//   single  (comm.cpp)      world size 1, every collective a no-op; unit tests
//                           and plain single-rank runs use it, no MPI needed
//   mpi     (comm_mpi.cpp)  CPU tensors, MPI_Allreduce in place; element
//                           counts beyond INT_MAX go in chunks
//   nccl    (comm_nccl.cpp) CUDA tensors (CPU ones through its MPI bootstrap);
//                           built only with a CUDA Torch + NCCL
// Every rank must issue the same collectives in the same order.
#pragma once

#include <torch/torch.h>

#include <climits>
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
  // Personalised exchange along dim 0: `t` holds send_rows[r] rows for rank
  // r, rank after rank (send_rows has world_size entries summing to
  // t.size(0)); returns the rows every rank sent to this one, concatenated
  // in rank order, and their counts in `recv_rows`. Every rank calls it.
  virtual torch::Tensor alltoall(const torch::Tensor& t, const std::vector<int64_t>& send_rows,
                                 std::vector<int64_t>& recv_rows) = 0;
  virtual void barrier() = 0;
  // Ends every rank of the job now (a failing rank calls it so none hangs).
  [[noreturn]] virtual void abort(int exit_code) = 0;

  bool is_root() const { return rank() == 0; }
  void allreduce_sum(std::vector<double>& values);  // convenience over a float64 tensor
  double allreduce_sum(double value);
  int64_t allreduce_sum(int64_t value);
  std::string broadcast_string(const std::string& text, int root = 0);  // root's `text` on every rank
};

// World size 1.
std::unique_ptr<Communicator> make_single_communicator();
// MPI_COMM_WORLD; initializes MPI if needed (finalized at exit). No MPI
// call gets a count above `max_count` (elements, or rows of a row type):
// larger tensors go in chunks (comm_mpi.cpp). Tests pass a small limit.
std::unique_ptr<Communicator> make_mpi_communicator(int64_t max_count = INT_MAX);
// NCCL over CUDA tensors on `device`; `bootstrap` (MPI) broadcasts the NCCL
// id and carries the CPU-side collectives. A build without CUDA Torch and
// NCCL throws a config error saying how to get one.
std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap, int device);
// True when this process was started by an MPI launcher (mpirun, srun).
bool launched_by_mpi();

}  // namespace sasrec
