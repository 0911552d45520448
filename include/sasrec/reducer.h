// reducer.h: a step's gradients summed over ranks in one call per step, as
// flashlight's Reducer: every dense gradient in one flat bucket, one
// all-reduce; the item table's gradient, when the step read it as rows
// (item_rows.h), either in that bucket (dense) or gathered as (id, row)
// pairs (sparse), chosen by train.exchange (auto: whichever moves fewer
// ring-algorithm bytes, decided each step); and two flags riding in the
// bucket so that every rank takes the same decisions (a non-finite loss on
// some rank, a stop requested on some rank). It counts what it moved.
// With a sharded item table (item_shard.h) the rows' gradients go to their
// owners instead, and a third flag says whether some owner's summed rows are
// not finite. This file owns the exchange; the communicator only moves bytes (comm.h).
#pragma once

#include <torch/torch.h>

#include <vector>

#include <nlohmann/json.hpp>

#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/item_rows.h"
#include "sasrec/item_shard.h"

namespace sasrec {

// What the reduce found, the same on every rank.
struct ReduceOutcome {
  int loss_bad_ranks = 0;  // ranks whose loss was not finite
  int stop_ranks = 0;      // ranks asked to stop (SIGTERM / SIGINT)
  int item_bad_ranks = 0;  // sharded: owners whose summed item rows are not finite
  // The item table's gradient as rows, its dense gradient then undefined:
  // with lazy item rows (ItemOptimizer::LazyAdam) the summed gradient of
  // every row any rank touched; at world size 1 this rank's rows whenever
  // the step read M as rows (adam too: FusedAdam::step_dense_rows).
  // Sharded: the rows of this rank's block that any rank touched, by LOCAL
  // index, summed; defined at every step (possibly no rows).
  RowGradient item_rows;
};

// An epoch's exchange figures: steps each way, bytes one rank moved (ring
// algorithms), item rows summed over ranks.
struct ExchangeStats {
  int64_t steps = 0, sparse_steps = 0, dense_steps = 0, wire_bytes = 0, rows = 0;
};

class Reducer {
 public:
  // `params`: every parameter, `item_table` among them (M, [I+1,d]);
  // `item_rows`: the steps read M as rows (every loss but ce) and hand
  // their gradient to reduce(); `lazy`: the optimizer steps only touched
  // rows (train.item_optimizer lazy_adam), so the rows are kept as rows;
  // `shard`: the item table is sharded (item_table is this rank's block),
  // the rows' gradients go to their owners; null: replicated.
  Reducer(Communicator& comm, std::vector<torch::Tensor> params, torch::Tensor item_table, Exchange exchange,
          bool item_rows, bool lazy, ItemShard* shard = nullptr);

  // Sums the gradients of this rank's step over all ranks, in place in each
  // parameter's grad() (undefined ones count as zeros). `rows`: the step's
  // item rows with their gradient (undefined on a rank without targets).
  // Every rank calls it at every step, in the same order.
  ReduceOutcome reduce(const ItemRows& rows, bool loss_bad, bool stop_requested);

  const ExchangeStats& stats() const { return stats_; }
  void reset_stats() {
    stats_ = {};
    if (shard_) shard_->reset_stats();
  }
  // The train_epoch event's "exchange" object for the steps since reset_stats().
  nlohmann::json stats_json() const;

 private:
  // Whether this step sends the item rows sparse (`total_rows` over all ranks).
  bool sparse_step(int64_t total_rows) const;
  // M's dense gradient holding `g`'s rows (zero elsewhere).
  void set_dense_item_grad(const RowGradient& g);
  // Every gradient but a sparse item table's in one all-reduce, with the flags [loss, stop, item rows]:
  // returns the flags summed over ranks.
  std::vector<double> reduce_bucket(bool skip_table, std::vector<float> flags);

  Communicator& comm_;
  std::vector<torch::Tensor> params_;
  torch::Tensor table_;
  Exchange exchange_;
  bool item_rows_, lazy_;
  ItemShard* shard_;
  int64_t dense_bucket_bytes_ = 0;  // every gradient + the flags
  ExchangeStats stats_;
};

}  // namespace sasrec
