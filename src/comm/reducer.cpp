// reducer.cpp: the step's gradient exchange (see reducer.h).
#include "sasrec/reducer.h"

#include "sasrec/error.h"

namespace sasrec {

Reducer::Reducer(Communicator& comm, std::vector<torch::Tensor> params, torch::Tensor item_table, Exchange exchange,
                 bool item_rows, bool lazy, ItemShard* shard)
    : comm_(comm),
      params_(std::move(params)),
      table_(std::move(item_table)),
      exchange_(exchange),
      item_rows_(item_rows),
      lazy_(lazy && item_rows),
      shard_(shard) {
  SASREC_CHECK(!shard_ || item_rows_, "a sharded item table is read by rows");
  for (const auto& p : params_)
    if (!shard_ || !p.is_same(table_)) dense_bucket_bytes_ += p.numel() * p.element_size();
  dense_bucket_bytes_ += 3 * sizeof(float);  // the bucket's flags
}

bool Reducer::sparse_step(int64_t total_rows) const {
  if (exchange_ != Exchange::Auto) return exchange_ == Exchange::Sparse;
  const int world = comm_.world_size();
  const int64_t row_bytes = sizeof(int64_t) + table_.size(1) * table_.element_size();
  return allgather_wire_bytes(total_rows * row_bytes, world) <
         allreduce_wire_bytes(table_.numel() * table_.element_size(), world);
}

void Reducer::set_dense_item_grad(const RowGradient& g) {
  table_.mutable_grad() = torch::zeros_like(table_).index_copy_(0, g.ids, g.values);
}

ReduceOutcome Reducer::reduce(const ItemRows& rows, bool loss_bad, bool stop_requested) {
  const int world = comm_.world_size();
  ReduceOutcome out;
  ++stats_.steps;
  if (shard_) {
    // Sharded: the rows' gradients to their owners (item_shard.h), the rest in the bucket.
    const int64_t before = shard_->stats().gradient_bytes;
    out.item_rows = shard_->return_gradient(rows);
    stats_.wire_bytes += shard_->stats().gradient_bytes - before;
    stats_.rows += out.item_rows.ids.size(0);
    ++stats_.sparse_steps;
    const bool item_bad = out.item_rows.values.numel() > 0 && !torch::isfinite(out.item_rows.values).all().item<bool>();
    const std::vector<float> mine{loss_bad ? 1.0f : 0.0f, stop_requested ? 1.0f : 0.0f, item_bad ? 1.0f : 0.0f};
    const auto flags = world == 1 ? std::vector<double>(mine.begin(), mine.end()) : reduce_bucket(true, mine);
    out.loss_bad_ranks = static_cast<int>(flags[0]), out.stop_ranks = static_cast<int>(flags[1]);
    out.item_bad_ranks = static_cast<int>(flags[2]);
    return out;
  }
  // This rank's item rows (none on a rank without targets this step).
  RowGradient mine;
  if (item_rows_) {
    mine.ids = rows.ids.defined() ? rows.ids : torch::empty({0}, table_.options().dtype(torch::kInt64));
    mine.values = rows.ids.defined() ? rows.gradient() : torch::empty({0, table_.size(1)}, table_.options());
  }
  if (world == 1) {
    // Kept as rows: lazy_adam steps them; adam steps every row, the others with a zero gradient
    // (FusedAdam::step_dense_rows), without M's dense gradient being written and read.
    if (item_rows_) out.item_rows = mine;
    out.loss_bad_ranks = loss_bad, out.stop_ranks = stop_requested;
    return out;
  }
  bool sparse = false;
  if (item_rows_) {
    const int64_t total_rows = comm_.allreduce_sum(mine.ids.size(0));
    stats_.wire_bytes += allreduce_wire_bytes(sizeof(int64_t), world);
    stats_.rows += total_rows;
    sparse = sparse_step(total_rows);
    if (sparse) {
      // Sparse: every rank's (ids, rows), gathered and summed in rank order.
      out.item_rows = allgather_rows(comm_, mine.ids, mine.values);
      stats_.wire_bytes +=
          allgather_wire_bytes(total_rows * (sizeof(int64_t) + table_.size(1) * table_.element_size()), world);
      if (!lazy_) set_dense_item_grad(out.item_rows), out.item_rows = {};
    } else {
      set_dense_item_grad(mine);  // all-reduced in the bucket below
    }
  }
  ++(sparse ? stats_.sparse_steps : stats_.dense_steps);
  const auto flags = reduce_bucket(sparse, {loss_bad ? 1.0f : 0.0f, stop_requested ? 1.0f : 0.0f, 0.0f});
  if (item_rows_ && !sparse && lazy_) {
    // Dense exchange, lazy Adam: the rows any rank touched (their ids are
    // 8 bytes a row) take their summed gradient; M's dense one goes away.
    auto ids = comm_.allgather(mine.ids.contiguous());
    stats_.wire_bytes += allgather_wire_bytes(ids.numel() * ids.element_size(), world);
    out.item_rows.ids = std::get<0>(at::_unique(ids, /*sorted=*/true));
    out.item_rows.values = table_.grad().index_select(0, out.item_rows.ids);
    table_.mutable_grad().reset();
  }
  out.loss_bad_ranks = static_cast<int>(flags[0]);
  out.stop_ranks = static_cast<int>(flags[1]);
  return out;
}

std::vector<double> Reducer::reduce_bucket(bool skip_table, std::vector<float> flags) {
  // One flat bucket: a single all-reduce per step, not one per tensor; the
  // flags ride along. A sparse or sharded item table stays out of it.
  std::vector<torch::Tensor> grads, bucketed;
  for (auto& p : params_) {
    if (skip_table && p.is_same(table_)) continue;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad().view(-1));
    bucketed.push_back(p);
  }
  const auto options = grads.front().options();
  const int64_t n_flags = static_cast<int64_t>(flags.size());
  grads.push_back(torch::tensor(flags).to(options.device()));
  auto flat = torch::cat(grads);
  if (comm_.world_size() > 1) {
    comm_.allreduce_sum(flat);
    stats_.wire_bytes += allreduce_wire_bytes(flat.numel() * flat.element_size(), comm_.world_size());
    int64_t offset = 0;
    for (auto& p : bucketed) {
      const int64_t n = p.numel();
      p.mutable_grad().view(-1).copy_(flat.slice(0, offset, offset + n));
      offset += n;
    }
  }
  auto summed = flat.slice(0, flat.numel() - n_flags).to(torch::kCPU, torch::kFloat64).contiguous();
  return std::vector<double>(summed.data_ptr<double>(), summed.data_ptr<double>() + n_flags);
}

nlohmann::json Reducer::stats_json() const {
  const int64_t steps = std::max<int64_t>(1, stats_.steps);
  nlohmann::json j{{"sparse_steps", stats_.sparse_steps},
                   {"dense_steps", stats_.dense_steps},
                   {"bytes_per_step", stats_.wire_bytes / steps},
                   {"dense_bytes_per_step", allreduce_wire_bytes(dense_bucket_bytes_, comm_.world_size())},
                   {"item_rows_per_step", stats_.rows / steps}};
  if (shard_) {
    // Sharded: the three all-to-alls one rank sent into, bytes a step (item_shard.h).
    const auto& s = shard_->stats();
    j["item_table"] = "sharded";
    j["request_bytes_per_step"] = s.request_bytes / steps;
    j["rows_bytes_per_step"] = s.rows_bytes / steps;
    j["gradient_bytes_per_step"] = s.gradient_bytes / steps;
  }
  return j;
}

}  // namespace sasrec
