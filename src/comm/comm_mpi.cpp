// comm_mpi.cpp: the MPI communicator (CPU tensors). Every MPI call goes
// through SASREC_MPI_CHECK (error.h), which names the call, the rank and
// MPI's message.
//
// MPI counts and displacements are `int`. Element counts above the
// communicator's limit (INT_MAX unless a test asks for less) go in chunks,
// as marian does: the all-reduce and broadcast in consecutive slices; the
// gathers and the all-to-all count rows of a contiguous row type and, when
// even the rows exceed the limit, run in rounds of at most that many rows
// from each rank (a 10M x 256 float bucket is 2.56e9 elements: two slices).
#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <cstdlib>
#include <numeric>

#include "sasrec/comm.h"
#include "sasrec/error.h"

namespace sasrec {

void detail::throw_mpi_error(int code, const char* expr, const char* file, int line) {
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, msg, &len);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  throw Error(ErrorDomain::Mpi, detail::cat("rank ", rank, ": ", expr, " failed: ", std::string(msg, len)), file, line);
}

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

// Elements in one row along dim 0 (a 0-d tensor is one row of one element).
int64_t row_elements(const torch::Tensor& t) {
  if (t.dim() == 0) return 1;
  int64_t n = 1;
  for (int64_t d = 1; d < t.dim(); ++d) n *= t.size(d);
  return n;
}

int64_t rows_of(const torch::Tensor& t) { return t.dim() == 0 ? 1 : t.size(0); }

// A committed MPI datatype of `n` consecutive elements, freed on scope exit.
class RowType {
 public:
  RowType(MPI_Datatype base, int64_t n) {
    SASREC_CHECK(n >= 1 && n <= INT_MAX, "a row of ", n, " elements");
    SASREC_MPI_CHECK(MPI_Type_contiguous(static_cast<int>(n), base, &type_));
    SASREC_MPI_CHECK(MPI_Type_commit(&type_));
  }
  ~RowType() { MPI_Type_free(&type_); }
  RowType(const RowType&) = delete;
  RowType& operator=(const RowType&) = delete;
  MPI_Datatype get() const { return type_; }

 private:
  MPI_Datatype type_ = MPI_DATATYPE_NULL;
};

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(int64_t max_count) : max_count_(max_count) {
    SASREC_CHECK(max_count_ >= 1 && max_count_ <= INT_MAX, "MPI count limit ", max_count_);
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
    char* data = static_cast<char*>(t.data_ptr());
    const int64_t n = t.numel(), size = t.element_size();
    for (int64_t first = 0; first < n; first += max_count_) {
      const int count = static_cast<int>(std::min(max_count_, n - first));
      SASREC_MPI_CHECK(
          MPI_Allreduce(MPI_IN_PLACE, data + first * size, count, mpi_type(t.scalar_type()), MPI_SUM, MPI_COMM_WORLD));
    }
  }

  void broadcast(torch::Tensor& t, int root) override {
    check_cpu(t);
    char* data = static_cast<char*>(t.data_ptr());
    const int64_t n = t.numel(), size = t.element_size();
    for (int64_t first = 0; first < n; first += max_count_) {
      const int count = static_cast<int>(std::min(max_count_, n - first));
      SASREC_MPI_CHECK(MPI_Bcast(data + first * size, count, mpi_type(t.scalar_type()), root, MPI_COMM_WORLD));
    }
  }

  torch::Tensor allgather(const torch::Tensor& t) override {
    check_cpu(t);
    const int64_t rows = rows_of(t);
    std::vector<int64_t> counts(size_);
    SASREC_MPI_CHECK(MPI_Allgather(&rows, 1, MPI_INT64_T, counts.data(), 1, MPI_INT64_T, MPI_COMM_WORLD));
    // Everyone sends its rows to everyone: the all-to-all with each rank's
    // block repeated for every destination, without copying it.
    std::vector<int64_t> send(size_, rows);
    const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    return exchange(t, send, counts, /*same_block=*/true, *std::max_element(counts.begin(), counts.end()), total);
  }

  torch::Tensor alltoall(const torch::Tensor& t, const std::vector<int64_t>& send_rows,
                         std::vector<int64_t>& recv_rows) override {
    check_cpu(t);
    SASREC_CHECK(static_cast<int>(send_rows.size()) == size_, "alltoall: ", send_rows.size(), " send counts for ",
                 size_, " ranks");
    int64_t total = 0;
    for (int64_t r : send_rows) total += r;
    SASREC_CHECK(total == rows_of(t), "alltoall: send counts sum to ", total, ", the tensor has ", rows_of(t), " rows");
    // Every rank's counts to every rank: each then plans the same rounds
    // (a rank with nothing to move still takes part in each of them).
    std::vector<int64_t> matrix(static_cast<size_t>(size_) * size_);  // [s * R + d]: rows s sends d
    SASREC_MPI_CHECK(
        MPI_Allgather(send_rows.data(), size_, MPI_INT64_T, matrix.data(), size_, MPI_INT64_T, MPI_COMM_WORLD));
    recv_rows.assign(size_, 0);
    int64_t largest_block = 0, largest_total = 0;
    for (int a = 0; a < size_; ++a) {
      int64_t sent = 0, received = 0;
      for (int b = 0; b < size_; ++b) {
        sent += matrix[a * size_ + b], received += matrix[b * size_ + a];
        largest_block = std::max(largest_block, matrix[a * size_ + b]);
      }
      largest_total = std::max({largest_total, sent, received});
      recv_rows[a] = matrix[a * size_ + rank_];
    }
    return exchange(t, send_rows, recv_rows, /*same_block=*/false, largest_block, largest_total);
  }

  void barrier() override { SASREC_MPI_CHECK(MPI_Barrier(MPI_COMM_WORLD)); }

  [[noreturn]] void abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::_Exit(exit_code);
  }

 private:
  // Rows of `t` to each rank (send[r] rows; `same_block`: every rank gets
  // all of t, an allgather) and from each (recv[r]), as MPI_Alltoallv over
  // a row type, in rounds of at most max_count_ rows from every block so
  // that no int count or displacement overflows. The rounds are planned
  // from what every rank knows alike: the largest block any rank sends and
  // the most rows any rank sends or receives in all. -> [sum(recv), ...].
  torch::Tensor exchange(const torch::Tensor& t, const std::vector<int64_t>& send, const std::vector<int64_t>& recv,
                         bool same_block, int64_t largest_block, int64_t largest_total) {
    std::vector<int64_t> shape = t.dim() == 0 ? std::vector<int64_t>{1} : t.sizes().vec();
    int64_t total_recv = 0;
    for (int64_t r : recv) total_recv += r;
    shape[0] = total_recv;
    auto out = torch::empty(shape, t.options());
    const int64_t row = row_elements(t);
    if (row == 0 || largest_total == 0) return out;  // the same on every rank: nobody moves a row
    const RowType type(mpi_type(t.scalar_type()), row);
    const int64_t row_bytes = row * t.element_size();
    std::vector<int64_t> send_first(size_, 0), recv_first(size_, 0);  // first row of each block
    for (int r = 1; r < size_; ++r) {
      send_first[r] = same_block ? 0 : send_first[r - 1] + send[r - 1];
      recv_first[r] = recv_first[r - 1] + recv[r - 1];
    }
    // The rounds: every block's rows [k C, (k+1) C). One round when every
    // rank's offsets fit an int; else a round's blocks are packed.
    const int64_t chunk = std::max<int64_t>(1, max_count_ / std::max(1, size_));
    const bool one_round = largest_total <= max_count_;
    const int64_t rounds = one_round ? 1 : (largest_block + chunk - 1) / chunk;
    std::vector<int> sc(size_), sd(size_), rc(size_), rd(size_);
    for (int64_t k = 0; k < rounds; ++k) {
      const int64_t lo = one_round ? 0 : k * chunk;
      const int64_t hi = one_round ? INT64_MAX : lo + chunk;
      auto piece = [&](int64_t n) { return std::max<int64_t>(0, std::min(n, hi) - lo); };
      if (one_round) {
        for (int r = 0; r < size_; ++r) {
          sc[r] = static_cast<int>(send[r]), sd[r] = static_cast<int>(send_first[r]);
          rc[r] = static_cast<int>(recv[r]), rd[r] = static_cast<int>(recv_first[r]);
        }
        SASREC_MPI_CHECK(MPI_Alltoallv(t.data_ptr(), sc.data(), sd.data(), type.get(), out.data_ptr(), rc.data(),
                                       rd.data(), type.get(), MPI_COMM_WORLD));
        break;
      }
      // Pack this round's rows of each block, exchange, unpack into place.
      std::vector<torch::Tensor> parts;
      int64_t s_off = 0, r_off = 0;
      for (int r = 0; r < size_; ++r) {
        const int64_t ns = piece(send[r]), nr = piece(recv[r]);
        parts.push_back(t.dim() == 0 ? t.view({1}) : t.narrow(0, ns > 0 ? send_first[r] + lo : 0, ns));  // past a block: none
        sc[r] = static_cast<int>(ns), sd[r] = static_cast<int>(s_off);
        rc[r] = static_cast<int>(nr), rd[r] = static_cast<int>(r_off);
        s_off += ns, r_off += nr;
      }
      auto packed = torch::cat(parts).contiguous();
      std::vector<int64_t> round_shape = shape;
      round_shape[0] = r_off;
      auto got = torch::empty(round_shape, t.options());
      SASREC_MPI_CHECK(MPI_Alltoallv(packed.data_ptr(), sc.data(), sd.data(), type.get(), got.data_ptr(), rc.data(),
                                     rd.data(), type.get(), MPI_COMM_WORLD));
      for (int r = 0; r < size_; ++r)
        if (rc[r] > 0)
          std::memcpy(static_cast<char*>(out.data_ptr()) + (recv_first[r] + lo) * row_bytes,
                      static_cast<const char*>(got.data_ptr()) + static_cast<int64_t>(rd[r]) * row_bytes,
                      static_cast<size_t>(rc[r]) * row_bytes);
    }
    return out;
  }

  int64_t max_count_;
  int rank_ = 0, size_ = 1, local_rank_ = 0;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(int64_t max_count) {
  return std::make_unique<MpiCommunicator>(max_count);
}

}  // namespace sasrec
