// comm_nccl.cpp: the NCCL communicator (CUDA tensors). Built only when CMake
// finds a CUDA-enabled Torch and NCCL (SASREC_HAVE_NCCL). MPI bootstraps it
// (the NCCL unique id is broadcast over MPI) and carries every collective on
// CPU tensors (metric sums, counts, checksums); CUDA tensors go over NCCL on
// the current stream. Every NCCL call goes through SASREC_NCCL_CHECK (error.h).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>

#include "sasrec/comm.h"
#include "sasrec/error.h"

namespace sasrec {

void detail::throw_nccl_error(int code, const char* expr, int rank, const char* file, int line) {
  throw Error(ErrorDomain::Nccl,
              detail::cat("rank ", rank, ": ", expr, " failed: ", ncclGetErrorString(static_cast<ncclResult_t>(code))),
              file, line);
}

namespace {

ncclDataType_t nccl_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return ncclFloat32;
    case torch::kFloat64: return ncclFloat64;
    case torch::kFloat16: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt64: return ncclInt64;
    case torch::kInt32: return ncclInt32;
    case torch::kUInt8: return ncclUint8;
    default: break;
  }
  SASREC_FAIL(Nccl, "NCCL communicator: unsupported dtype ", t);
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(std::unique_ptr<Communicator> bootstrap, int device)
      : bootstrap_(std::move(bootstrap)), device_(device) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device_));
    ncclUniqueId id;
    if (bootstrap_->is_root()) SASREC_NCCL_CHECK(ncclGetUniqueId(&id), bootstrap_->rank());
    auto bytes = torch::from_blob(&id, {static_cast<int64_t>(sizeof(id))}, torch::kUInt8).clone();
    bootstrap_->broadcast(bytes, 0);
    std::memcpy(&id, bytes.data_ptr(), sizeof(id));
    SASREC_NCCL_CHECK(ncclCommInitRank(&comm_, bootstrap_->world_size(), id, bootstrap_->rank()), bootstrap_->rank());
  }
  ~NcclCommunicator() override {
    if (comm_) ncclCommDestroy(comm_);
  }

  std::string name() const override { return "nccl"; }
  int rank() const override { return bootstrap_->rank(); }
  int world_size() const override { return bootstrap_->world_size(); }
  int local_rank() const override { return bootstrap_->local_rank(); }

  void allreduce_sum(torch::Tensor& t) override {
    if (!t.is_cuda()) return bootstrap_->allreduce_sum(t);
    check(t);
    SASREC_NCCL_CHECK(
        ncclAllReduce(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), ncclSum, comm_, stream(t)),
        bootstrap_->rank());
  }

  void broadcast(torch::Tensor& t, int root) override {
    if (!t.is_cuda()) return bootstrap_->broadcast(t, root);
    check(t);
    SASREC_NCCL_CHECK(
        ncclBroadcast(t.data_ptr(), t.data_ptr(), t.numel(), nccl_type(t.scalar_type()), root, comm_, stream(t)),
        bootstrap_->rank());
  }

  torch::Tensor allgather(const torch::Tensor& t) override {
    if (!t.is_cuda()) return bootstrap_->allgather(t);
    check(t);
    // Rows differ per rank: gather the counts, pad to the largest, gather, trim.
    auto rows = bootstrap_->allgather(torch::full({1}, t.size(0), torch::kInt64));
    const int64_t most = rows.max().item<int64_t>();
    std::vector<int64_t> shape = t.sizes().vec();
    shape[0] = most;
    auto padded = torch::zeros(shape, t.options());
    padded.slice(0, 0, t.size(0)).copy_(t);
    shape[0] = most * world_size();
    auto all = torch::empty(shape, t.options());
    SASREC_NCCL_CHECK(
        ncclAllGather(padded.data_ptr(), all.data_ptr(), padded.numel(), nccl_type(t.scalar_type()), comm_, stream(t)),
        bootstrap_->rank());
    std::vector<torch::Tensor> parts;
    for (int r = 0; r < world_size(); ++r) parts.push_back(all.slice(0, r * most, r * most + rows[r].item<int64_t>()));
    return torch::cat(parts);
  }

  torch::Tensor alltoall(const torch::Tensor& t, const std::vector<int64_t>& send_rows,
                         std::vector<int64_t>& recv_rows) override {
    if (!t.is_cuda()) return bootstrap_->alltoall(t, send_rows, recv_rows);
    check(t);
    SASREC_CHECK(static_cast<int>(send_rows.size()) == world_size(), "alltoall: ", send_rows.size(),
                 " send counts for ", world_size(), " ranks");
    // The counts travel on the host (the bootstrap); the rows as one NCCL
    // group of a send and a receive per peer, which NCCL runs concurrently.
    auto counts = torch::tensor(send_rows, torch::kInt64);
    recv_rows.assign(world_size(), 0);
    std::vector<int64_t> ones(world_size(), 1), got_rows;
    auto got = bootstrap_->alltoall(counts, ones, got_rows);
    std::copy(got.data_ptr<int64_t>(), got.data_ptr<int64_t>() + world_size(), recv_rows.begin());
    int64_t total = 0;
    for (int64_t r : recv_rows) total += r;
    std::vector<int64_t> shape = t.sizes().vec();
    shape[0] = total;
    auto out = torch::empty(shape, t.options());
    const int64_t row = t.size(0) > 0 ? t.numel() / t.size(0) : (total > 0 ? out.numel() / total : 0);
    const size_t bytes = t.element_size();
    const auto type = nccl_type(t.scalar_type());
    auto* send = static_cast<const char*>(t.data_ptr());
    auto* recv = static_cast<char*>(out.data_ptr());
    int64_t s_off = 0, r_off = 0;
    SASREC_NCCL_CHECK(ncclGroupStart(), bootstrap_->rank());
    for (int r = 0; r < world_size(); ++r) {
      if (send_rows[r] > 0)
        SASREC_NCCL_CHECK(ncclSend(send + s_off * row * bytes, send_rows[r] * row, type, r, comm_, stream(t)),
                          bootstrap_->rank());
      if (recv_rows[r] > 0)
        SASREC_NCCL_CHECK(ncclRecv(recv + r_off * row * bytes, recv_rows[r] * row, type, r, comm_, stream(t)),
                          bootstrap_->rank());
      s_off += send_rows[r], r_off += recv_rows[r];
    }
    SASREC_NCCL_CHECK(ncclGroupEnd(), bootstrap_->rank());
    return out;
  }

  void barrier() override { bootstrap_->barrier(); }

  [[noreturn]] void abort(int exit_code) override {
    if (comm_) ncclCommAbort(comm_);
    comm_ = nullptr;
    bootstrap_->abort(exit_code);
    std::_Exit(exit_code);  // not reached: the bootstrap's abort does not return
  }

 private:
  void check(const torch::Tensor& t) const {
    SASREC_CHECK(t.is_contiguous() && t.device().index() == device_,
                 "NCCL collectives take contiguous tensors on cuda:", device_);
  }
  static cudaStream_t stream(const torch::Tensor& t) {
    return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  }

  std::unique_ptr<Communicator> bootstrap_;
  int device_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(std::unique_ptr<Communicator> bootstrap, int device) {
  return std::make_unique<NcclCommunicator>(std::move(bootstrap), device);
}

}  // namespace sasrec
