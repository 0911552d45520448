// item_shard.cpp: rows fetched from and gradients returned to their owners (see item_shard.h).
#include "sasrec/item_shard.h"

#include <algorithm>

#include "sasrec/error.h"

namespace sasrec {

ShardLayout::ShardLayout(int64_t rows, int world)
    : rows_(rows), block_(std::max<int64_t>(1, (rows + world - 1) / std::max(1, world))), world_(world) {
  SASREC_CHECK(rows >= 1 && world >= 1, "ShardLayout(", rows, " rows, ", world, " ranks)");
}

std::vector<int64_t> ShardLayout::split(const torch::Tensor& sorted_ids) const {
  // Owners hold contiguous blocks, so each owner's ids are one run of the sorted ids.
  auto ids = sorted_ids.to(torch::kCPU).contiguous();
  const int64_t* p = ids.data_ptr<int64_t>();
  const int64_t n = ids.numel();
  std::vector<int64_t> counts(world_, 0);
  int64_t at = 0;
  for (int r = 0; r < world_; ++r) {
    const int64_t stop = std::lower_bound(p + at, p + n, end(r)) - p;
    counts[r] = stop - at;
    at = stop;
  }
  SASREC_CHECK(at == n, "ShardLayout::split: ids beyond the table's ", rows_, " rows");
  return counts;
}

ItemShard::ItemShard(Communicator& comm, int64_t rows, int64_t d, torch::Device device)
    : comm_(comm), layout_(rows, comm.world_size()), d_(d), device_(device) {}

namespace {

// Rows of `counts` that leave this rank (those to itself stay).
int64_t sent_elsewhere(const std::vector<int64_t>& counts, int rank) {
  int64_t n = 0;
  for (int r = 0; r < static_cast<int>(counts.size()); ++r)
    if (r != rank) n += counts[r];
  return n;
}

}  // namespace

torch::Tensor ItemShard::fetch_ids(const torch::Tensor& table, const torch::Tensor& ids) {
  SASREC_CHECK(table.dim() == 2 && table.size(0) == size() && table.size(1) == d_, "ItemShard: rank ", comm_.rank(),
               "'s table is ", table.sizes(), ", its block is [", size(), ", ", d_, "]");
  const std::vector<int64_t> send = layout_.split(ids);
  std::vector<int64_t> recv, back;
  // 1. The ids to their owners; 2. the rows back, in the order asked.
  const torch::Tensor wanted = comm_.alltoall(ids.to(device_).contiguous(), send, recv);
  const torch::Tensor rows = table.detach().index_select(0, wanted - begin());
  torch::Tensor out = comm_.alltoall(rows.contiguous(), recv, back);
  stats_.request_bytes += sent_elsewhere(send, comm_.rank()) * static_cast<int64_t>(sizeof(int64_t));
  stats_.rows_bytes += sent_elsewhere(recv, comm_.rank()) * d_ * table.element_size();
  return out;
}

ItemRows ItemShard::fetch(const torch::Tensor& table, const std::vector<torch::Tensor*>& parts, bool requires_grad) {
  ItemRows rows;
  rows.ids = unique_and_remap(parts, layout_.rows());
  rows.table = fetch_ids(table, rows.ids);
  if (requires_grad) rows.table.set_requires_grad(true);
  return rows;
}

RowGradient ItemShard::return_gradient(const ItemRows& rows) {
  const bool mine = rows.ids.defined() && rows.ids.numel() > 0;
  const auto on_device = torch::TensorOptions().device(device_);
  torch::Tensor ids = torch::empty({0}, on_device.dtype(torch::kInt64));
  torch::Tensor values = torch::empty({0, d_}, on_device.dtype(torch::kFloat32));
  if (mine) {
    ids = rows.ids.to(device_).contiguous();
    values = rows.table.grad().defined() ? rows.table.grad() : torch::zeros_like(rows.table);
  }
  const std::vector<int64_t> send = layout_.split(ids);
  std::vector<int64_t> recv, recv_again;
  const torch::Tensor got_ids = comm_.alltoall(ids, send, recv);
  const torch::Tensor got_values = comm_.alltoall(values.contiguous(), send, recv_again);
  stats_.gradient_bytes +=
      sent_elsewhere(send, comm_.rank()) * (static_cast<int64_t>(sizeof(int64_t)) + d_ * values.element_size());
  // Senders in rank order, so each id's rows are added rank after rank.
  return sum_duplicate_rows(got_ids - begin(), got_values);
}

}  // namespace sasrec
