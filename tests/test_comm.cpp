// test_comm.cpp: the collectives themselves, under `mpirun -np 2` (ctest
// does it; any rank count works), as nccl-tests checks them: every input is
// a function of (rank, index) whose result is exact in any summation order
// (small integers, in every dtype), and the verdict, the count of wrong
// elements, is all-reduced so that every rank reports the same outcome. Each
// collective runs twice: with MPI's int limits, and with a limit of 7
// elements a call, so that the chunked and round paths (comm_mpi.cpp) run.
#include <gtest/gtest.h>

#include <numeric>

#include "sasrec/blas_kernels.h"
#include "sasrec/comm.h"

using namespace sasrec;

namespace {

struct Comms {
  std::unique_ptr<Communicator> plain, chunked;
};
Comms* g = nullptr;

class MpiEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    comms_.plain = make_mpi_communicator();
    comms_.chunked = make_mpi_communicator(/*max_count=*/7);
    g = &comms_;
  }
  void TearDown() override { g = nullptr; }

 private:
  Comms comms_;
};

// The value rank r contributes at flat index i: exact in every dtype used.
double value(int r, int64_t i) { return static_cast<double>((r + 1) * (i % 13) + (i % 5)); }

// Wrong elements summed over ranks: every rank gets the same verdict.
int64_t agree(Communicator& c, int64_t wrong) { return c.allreduce_sum(wrong); }

int64_t count_wrong(const torch::Tensor& got, const torch::Tensor& want) {
  if (got.sizes() != want.sizes()) return std::max<int64_t>(1, want.numel());
  return (got.to(torch::kFloat64) != want.to(torch::kFloat64)).sum().item<int64_t>();
}

class Collectives : public ::testing::TestWithParam<bool> {
 protected:
  Communicator& comm() { return GetParam() ? *g->chunked : *g->plain; }
};

TEST_P(Collectives, AllreduceSumEveryDtype) {
  Communicator& c = comm();
  const int world = c.world_size();
  for (auto dtype : {torch::kFloat32, torch::kFloat64, torch::kInt64, torch::kInt32, torch::kUInt8}) {
    for (int64_t n : {1, 7, 8, 100}) {
      auto mine = torch::empty({n}, torch::kFloat64), want = torch::zeros({n}, torch::kFloat64);
      for (int64_t i = 0; i < n; ++i) {
        mine[i] = dtype == torch::kUInt8 ? static_cast<double>(i % 3) : value(c.rank(), i);
        for (int r = 0; r < world; ++r) want[i] += dtype == torch::kUInt8 ? static_cast<double>(i % 3) : value(r, i);
      }
      auto t = mine.to(dtype);
      c.allreduce_sum(t);
      EXPECT_EQ(agree(c, count_wrong(t, want)), 0) << "dtype " << dtype << ", " << n << " elements";
    }
  }
}

TEST_P(Collectives, BroadcastFromEveryRoot) {
  Communicator& c = comm();
  for (int root = 0; root < c.world_size(); ++root) {
    auto t = torch::full({3, 5}, static_cast<double>(c.rank() * 100), torch::kFloat64).to(torch::kFloat32);
    c.broadcast(t, root);
    EXPECT_EQ(agree(c, count_wrong(t, torch::full({3, 5}, root * 100.0))), 0) << "root " << root;
  }
}

TEST_P(Collectives, AllgatherUnevenRowsInRankOrder) {
  Communicator& c = comm();
  const int world = c.world_size();
  // Rank r sends 2r+1 rows of 3 (rank 1 none when the count would be 3: an empty part too).
  auto rows_of = [](int r) { return r == 1 ? int64_t{0} : int64_t{2 * r + 1}; };
  for (auto dtype : {torch::kFloat32, torch::kInt64}) {
    auto make = [&](int r) {
      auto t = torch::empty({rows_of(r), 3}, torch::kFloat64);
      for (int64_t i = 0; i < t.numel(); ++i) t.view(-1)[i] = value(r, i) + 1000 * r;
      return t;
    };
    std::vector<torch::Tensor> parts;
    for (int r = 0; r < world; ++r) parts.push_back(make(r));
    auto got = c.allgather(make(c.rank()).to(dtype));
    EXPECT_EQ(agree(c, count_wrong(got, torch::cat(parts))), 0) << "dtype " << dtype;
  }
}

TEST_P(Collectives, AlltoallUnevenCountsWithEmptyBlocks) {
  Communicator& c = comm();
  const int world = c.world_size(), me = c.rank();
  // Rank s sends (s + d) % 3 rows of width 2 to rank d; row j of that block is 1000 s + 10 d + j.
  auto count = [](int s, int d) { return static_cast<int64_t>((s + d) % 3); };
  auto block = [&](int s, int d) {
    auto t = torch::empty({count(s, d), 2}, torch::kFloat64);
    for (int64_t j = 0; j < t.size(0); ++j) t[j] = 1000.0 * s + 10.0 * d + static_cast<double>(j);
    return t;
  };
  std::vector<torch::Tensor> send_parts, want_parts;
  std::vector<int64_t> send_rows, want_rows;
  for (int d = 0; d < world; ++d) send_parts.push_back(block(me, d)), send_rows.push_back(count(me, d));
  for (int s = 0; s < world; ++s) want_parts.push_back(block(s, me)), want_rows.push_back(count(s, me));
  for (auto dtype : {torch::kFloat32, torch::kInt64, torch::kFloat64}) {
    std::vector<int64_t> recv_rows;
    auto got = c.alltoall(torch::cat(send_parts).to(dtype), send_rows, recv_rows);
    int64_t wrong = count_wrong(got, torch::cat(want_parts));
    wrong += recv_rows == want_rows ? 0 : 1;
    EXPECT_EQ(agree(c, wrong), 0) << "dtype " << dtype;
  }
}

// All-to-all is one collective for every rank, whatever its own counts:
// a rank with nothing to send or receive still takes part, and a rank whose
// blocks fit one call goes through as many rounds as the rank whose blocks
// need several (the chunked limit: 7 rows a call). Before, both hung at 3
// ranks (a sharded export: owners send rank 0 their rows, the rest nothing).
TEST_P(Collectives, AlltoallWhereOnlySomeRanksMoveRows) {
  Communicator& c = comm();
  const int world = c.world_size(), me = c.rank();
  // Only the last rank sends: 20 rows to rank 0 (itself when alone), rows 100 s + j.
  const int64_t mine = me == world - 1 ? 20 : 0;
  std::vector<int64_t> send_rows(world, 0), recv_rows;
  send_rows[0] = mine;
  auto t = torch::arange(mine, torch::kFloat64).add_(100.0 * me).view({mine, 1}).expand({mine, 3}).contiguous();
  auto got = c.alltoall(t, send_rows, recv_rows);
  const int64_t want_rows = me == 0 ? 20 : 0;
  auto want = torch::arange(want_rows, torch::kFloat64).add_(100.0 * (world - 1)).view({want_rows, 1}).expand({want_rows, 3});
  int64_t wrong = count_wrong(got, want);
  std::vector<int64_t> want_recv(world, 0);
  if (me == 0) want_recv[world - 1] = 20;
  wrong += recv_rows == want_recv ? 0 : 1;
  // Each rank to itself: rank 0 20 rows (rounds of the chunked limit), the others one.
  std::fill(send_rows.begin(), send_rows.end(), 0);
  send_rows[me] = me == 0 ? 20 : 1;
  auto own = torch::arange(send_rows[me], torch::kFloat64).view({send_rows[me], 1}).expand({send_rows[me], 2}).contiguous();
  wrong += count_wrong(c.alltoall(own, send_rows, recv_rows), own);
  // Then nobody moves anything; the next collective still lines up.
  std::vector<int64_t> none(world, 0);
  wrong += c.alltoall(torch::empty({0, 3}, torch::kFloat64), none, recv_rows).size(0);
  EXPECT_EQ(agree(c, wrong), 0);
}

TEST_P(Collectives, AllgatherOfScalarsAndLargeRows) {
  Communicator& c = comm();
  // A 0-d tensor gathers to [world]; rows of 40 elements exceed the chunked limit of 7 per call.
  auto got = c.allgather(torch::tensor(static_cast<int64_t>(c.rank() * 3)));
  auto want = torch::arange(c.world_size(), torch::kInt64) * 3;
  int64_t wrong = count_wrong(got, want);
  auto wide = torch::full({2, 40}, static_cast<double>(c.rank()), torch::kFloat64);
  std::vector<torch::Tensor> parts;
  for (int r = 0; r < c.world_size(); ++r)
    parts.push_back(torch::full({2, 40}, static_cast<double>(r), torch::kFloat64));
  wrong += count_wrong(c.allgather(wide), torch::cat(parts));
  EXPECT_EQ(agree(c, wrong), 0);
}

INSTANTIATE_TEST_SUITE_P(Limits, Collectives, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "Chunked7" : "IntMax"; });

TEST(SingleCommunicator, AlltoallIsTheIdentity) {
  auto c = make_single_communicator();
  auto t = torch::arange(6, torch::kFloat32).view({3, 2});
  std::vector<int64_t> recv;
  auto got = c->alltoall(t, {3}, recv);
  EXPECT_TRUE(torch::equal(got, t));
  EXPECT_EQ(recv, std::vector<int64_t>{3});
}

}  // namespace

int main(int argc, char** argv) {
  sasrec::restart_with_better_blas(argv, /*quiet=*/true);  // before MPI_Init (blas_kernels.h)
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new MpiEnvironment);
  return RUN_ALL_TESTS();
}
