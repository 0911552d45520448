// item_shard.h: the item table sharded by rows across ranks
// (train.item_table: sharded, docs/large_catalogs.md).
//
// Rank r owns the rows [begin(r), end(r)) of M's I+1 rows, blocks of
// ceil((I+1)/R) rows in rank order, and their optimizer state; no rank holds
// the whole table. A step of a sampled loss reads M only at its batch's
// items, so each rank
//   1. fetches them: its sorted unique ids go to their owners in one
//      all-to-all and the rows come back in a second, already in id order
//      (ids are sorted and owners hold contiguous blocks), as the same
//      ItemRows the replicated path copies out of a whole table;
//   2. returns their gradient: the rows go back to the owners along the
//      fetch's routes in a third all-to-all (each owner kept the ids it was
//      asked, so no id travels twice); each owner sums the rows of one id in
//      rank order, the order the replicated sparse exchange sums them in, so
//      a sharded run computes the floats of a replicated one.
// Every rank calls each function at every step, in the same order, with no
// ids if it has none.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "sasrec/comm.h"
#include "sasrec/item_rows.h"

namespace sasrec {

// Which rank owns which rows: pure arithmetic, the same on every rank.
class ShardLayout {
 public:
  ShardLayout(int64_t rows, int world);
  int64_t rows() const { return rows_; }  // I+1, the padding row 0 included
  int world() const { return world_; }
  int64_t begin(int rank) const { return std::min(rows_, rank * block_); }
  int64_t end(int rank) const { return std::min(rows_, (rank + 1) * block_); }
  int64_t size(int rank) const { return end(rank) - begin(rank); }
  int owner(int64_t id) const { return static_cast<int>(id / block_); }
  // Rows of each owner among sorted `ids` [n]: counts[r] ids in [begin(r), end(r)).
  std::vector<int64_t> split(const torch::Tensor& sorted_ids) const;

 private:
  int64_t rows_, block_;
  int world_;
};

class ItemShard {
 public:
  // `rows`: M's rows, I+1; `d` its width; `device` the table's: every
  // tensor of the exchanges lives there, an empty one too (NCCL moves
  // CUDA tensors, its MPI bootstrap CPU ones: all ranks must agree).
  ItemShard(Communicator& comm, int64_t rows, int64_t d, torch::Device device = torch::kCPU);

  const ShardLayout& layout() const { return layout_; }
  Communicator& comm() const { return comm_; }
  torch::Device device() const { return device_; }
  int64_t begin() const { return layout_.begin(comm_.rank()); }
  int64_t size() const { return layout_.size(comm_.rank()); }

  // `table` is this rank's block of M, [size(), d]. The rows named by the
  // ids in `parts`, from their owners; each part rewritten as row indices
  // of the returned table (a leaf that requires grad when `requires_grad`:
  // then the routes are kept for return_gradient). Parts may all be empty
  // or undefined.
  ItemRows fetch(const torch::Tensor& table, const std::vector<torch::Tensor*>& parts, bool requires_grad = true);
  // The rows of sorted unique global `ids` [n] (this rank's request), [n, d];
  // `keep_routes`: remember who asked this rank for what.
  torch::Tensor fetch_ids(const torch::Tensor& table, const torch::Tensor& ids, bool keep_routes = false);
  // The gradient of the rows of the last fetch that kept its routes (every
  // rank's `rows` from that fetch) to their owners: this rank's rows that
  // any rank touched, by LOCAL index (sorted, unique), summed over ranks in
  // rank order. Consumes the routes.
  RowGradient return_gradient(const ItemRows& rows);

  // Bytes this rank sent in the all-to-alls since reset_stats(): requested
  // ids, rows sent back, gradient rows returned.
  struct Stats {
    int64_t request_bytes = 0, rows_bytes = 0, gradient_bytes = 0;
  };
  const Stats& stats() const { return stats_; }
  void reset_stats() { stats_ = {}; }

 private:
  Communicator& comm_;
  ShardLayout layout_;
  int64_t d_;
  torch::Device device_;
  Stats stats_;
  // The routes of the last fetch with keep_routes: the ids each rank asked
  // this one for (local rows, in rank order) and how many went each way.
  struct Routes {
    bool kept = false;
    torch::Tensor asked;                // [sum(recv)] local rows
    std::vector<int64_t> send, recv;    // rows this rank asked of each owner / was asked by each rank
  } routes_;
};

}  // namespace sasrec
