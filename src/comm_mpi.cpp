// comm_mpi.cpp: the MPI communicator (CPU tensors). Every MPI call goes
// through SASREC_MPI_CHECK, which names the call, the rank and MPI's message.
#include <mpi.h>

#include <cstdlib>

#include "sasrec/comm.h"
#include "sasrec/error.h"

#define SASREC_MPI_CHECK(expr)                                                                         \
  do {                                                                                                 \
    int rc_ = (expr);                                                                                  \
    if (rc_ != MPI_SUCCESS) {                                                                          \
      char msg_[MPI_MAX_ERROR_STRING];                                                                 \
      int len_ = 0;                                                                                    \
      MPI_Error_string(rc_, msg_, &len_);                                                              \
      throw ::sasrec::Error(::sasrec::ErrorDomain::Mpi,                                                \
                            ::sasrec::detail::cat(#expr, " failed: ", std::string(msg_, len_)), __FILE__, \
                            __LINE__);                                                                 \
    }                                                                                                  \
  } while (0)

namespace sasrec {
namespace {

MPI_Datatype mpi_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return MPI_FLOAT;
    case torch::kFloat64: return MPI_DOUBLE;
    case torch::kInt64: return MPI_INT64_T;
    case torch::kInt32: return MPI_INT32_T;
    case torch::kUInt8: return MPI_UINT8_T;
    default: break;
  }
  SASREC_FAIL(Mpi, "MPI communicator: unsupported dtype ", t);
}

void check_cpu(const torch::Tensor& t) {
  SASREC_CHECK(t.device().is_cpu() && t.is_contiguous(), "MPI collectives take contiguous CPU tensors");
}

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator() {
    int initialized = 0;
    SASREC_MPI_CHECK(MPI_Initialized(&initialized));
    if (!initialized) {
      int provided = 0;
      SASREC_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided));
      std::atexit([] {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (!finalized) MPI_Finalize();
      });
    }
    // Errors come back as codes (turned into exceptions), not MPI's default abort.
    SASREC_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    SASREC_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
    SASREC_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size_));
    MPI_Comm node;
    SASREC_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    SASREC_MPI_CHECK(MPI_Comm_rank(node, &local_rank_));
    SASREC_MPI_CHECK(MPI_Comm_free(&node));
  }

  std::string name() const override { return "mpi"; }
  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  int local_rank() const override { return local_rank_; }

  void allreduce_sum(torch::Tensor& t) override {
    check_cpu(t);
    SASREC_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()),
                                   mpi_type(t.scalar_type()), MPI_SUM, MPI_COMM_WORLD));
  }

  void broadcast(torch::Tensor& t, int root) override {
    check_cpu(t);
    SASREC_MPI_CHECK(
        MPI_Bcast(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.scalar_type()), root, MPI_COMM_WORLD));
  }

  torch::Tensor allgather(const torch::Tensor& t) override {
    check_cpu(t);
    const int64_t row = t.dim() == 0 ? 1 : t.numel() / std::max<int64_t>(1, t.size(0));
    int rows = static_cast<int>(t.dim() == 0 ? 1 : t.size(0));
    std::vector<int> counts(size_), displs(size_);
    SASREC_MPI_CHECK(MPI_Allgather(&rows, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD));
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[r] = total * static_cast<int>(row);
      total += counts[r];
      counts[r] *= static_cast<int>(row);
    }
    std::vector<int64_t> shape = t.dim() == 0 ? std::vector<int64_t>(1, 1) : t.sizes().vec();
    shape[0] = total;
    auto out = torch::empty(shape, t.options());
    SASREC_MPI_CHECK(MPI_Allgatherv(t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.scalar_type()),
                                    out.data_ptr(), counts.data(), displs.data(), mpi_type(t.scalar_type()),
                                    MPI_COMM_WORLD));
    return out;
  }

  void barrier() override { SASREC_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }

  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator() { return std::make_unique<MpiCommunicator>(); }

}  // namespace sasrec
