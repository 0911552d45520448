// comm.cpp: the single-process communicator and the conveniences shared by all.
#include "sasrec/comm.h"

#include <algorithm>
#include <cstdlib>

#include "sasrec/error.h"

namespace sasrec {
namespace {

class SingleCommunicator final : public Communicator {
 public:
  std::string name() const override { return "single"; }
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  int local_rank() const override { return 0; }
  void allreduce_sum(torch::Tensor&) override {}
  void broadcast(torch::Tensor&, int) override {}
  torch::Tensor allgather(const torch::Tensor& t) override { return t.clone(); }
  torch::Tensor alltoall(const torch::Tensor& t, const std::vector<int64_t>& send_rows,
                         std::vector<int64_t>& recv_rows) override {
    SASREC_CHECK(send_rows.size() == 1 && send_rows[0] == (t.dim() == 0 ? 1 : t.size(0)),
                 "alltoall: one rank sends all its rows to itself");
    recv_rows = send_rows;
    return t.clone();
  }
  void barrier() override {}
  [[noreturn]] void abort(int exit_code) override { std::_Exit(exit_code); }
};

}  // namespace

std::unique_ptr<Communicator> make_single_communicator() { return std::make_unique<SingleCommunicator>(); }

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v)) return true;
  return false;
}

void Communicator::allreduce_sum(std::vector<double>& values) {
  if (world_size() == 1 || values.empty()) return;
  auto t = torch::from_blob(values.data(), {static_cast<int64_t>(values.size())}, torch::kFloat64).clone();
  allreduce_sum(t);
  std::copy(t.data_ptr<double>(), t.data_ptr<double>() + values.size(), values.begin());
}

double Communicator::allreduce_sum(double value) {
  std::vector<double> v{value};
  allreduce_sum(v);
  return v[0];
}

int64_t Communicator::allreduce_sum(int64_t value) {
  if (world_size() == 1) return value;
  auto t = torch::full({1}, value, torch::kInt64);
  allreduce_sum(t);
  return t.item<int64_t>();
}

std::string Communicator::broadcast_string(const std::string& text, int root) {
  if (world_size() == 1) return text;
  auto size = torch::tensor({static_cast<int64_t>(text.size())}, torch::kInt64);
  broadcast(size, root);
  auto bytes = torch::zeros({size.item<int64_t>()}, torch::kUInt8);
  if (rank() == root) std::copy(text.begin(), text.end(), bytes.data_ptr<uint8_t>());
  broadcast(bytes, root);
  return std::string(reinterpret_cast<const char*>(bytes.data_ptr<uint8_t>()), static_cast<size_t>(bytes.numel()));
}

}  // namespace sasrec
