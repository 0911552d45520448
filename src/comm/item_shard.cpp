// item_shard.cpp: rows fetched from and gradients returned to their owners (see item_shard.h).
#include "sasrec/item_shard.h"

#include <algorithm>
#include <utility>

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

torch::Tensor ItemShard::fetch_ids(const torch::Tensor& table, const torch::Tensor& ids, bool keep_routes) {
  SASREC_CHECK(table.dim() == 2 && table.size(0) == size() && table.size(1) == d_, "ItemShard: rank ", comm_.rank(),
               "'s table is ", table.sizes(), ", its block is [", size(), ", ", d_, "]");
  const std::vector<int64_t> send = layout_.split(ids);
  std::vector<int64_t> recv, back;
  // 1. The ids to their owners; 2. the rows back, in the order asked.
  const torch::Tensor wanted = comm_.alltoall(ids.to(device_).contiguous(), send, recv);
  const torch::Tensor asked = wanted - begin();
  const torch::Tensor rows = table.detach().index_select(0, asked);
  torch::Tensor out = comm_.alltoall(rows.contiguous(), recv, back);
  stats_.request_bytes += sent_elsewhere(send, comm_.rank()) * static_cast<int64_t>(sizeof(int64_t));
  stats_.rows_bytes += sent_elsewhere(recv, comm_.rank()) * d_ * table.element_size();
  if (keep_routes) routes_ = Routes{true, asked, send, recv};
  return out;
}

ItemRows ItemShard::fetch(const torch::Tensor& table, const std::vector<torch::Tensor*>& parts, bool requires_grad) {
  ItemRows rows;
  rows.ids = unique_and_remap(parts, layout_.rows());
  rows.table = fetch_ids(table, rows.ids, /*keep_routes=*/requires_grad);
  if (requires_grad) rows.table.set_requires_grad(true);
  return rows;
}

RowGradient ItemShard::return_gradient(const ItemRows& rows) {
  SASREC_CHECK(routes_.kept, "ItemShard::return_gradient without a fetch that kept its routes");
  const Routes routes = std::exchange(routes_, Routes{});
  int64_t asked_of_owners = 0;
  for (int64_t c : routes.send) asked_of_owners += c;
  const int64_t n = rows.ids.defined() ? rows.ids.numel() : 0;
  SASREC_CHECK(n == asked_of_owners, "ItemShard::return_gradient: ", n, " rows, the fetch asked for ",
               asked_of_owners);
  torch::Tensor values = torch::empty({0, d_}, torch::TensorOptions().device(device_).dtype(torch::kFloat32));
  if (n > 0) values = rows.table.grad().defined() ? rows.table.grad() : torch::zeros_like(rows.table);
  // Back along the fetch's routes: this rank sends each owner the rows it
  // asked of it and receives, rank after rank, the rows it was asked for.
  std::vector<int64_t> recv;
  const torch::Tensor got = comm_.alltoall(values.contiguous(), routes.send, recv);
  SASREC_CHECK(recv == routes.recv, "ItemShard::return_gradient: the ranks' routes disagree");
  stats_.gradient_bytes += sent_elsewhere(routes.send, comm_.rank()) * d_ * values.element_size();
  // Senders in rank order, so each id's rows are added rank after rank.
  return sum_duplicate_rows(routes.asked, got);
}

}  // namespace sasrec
