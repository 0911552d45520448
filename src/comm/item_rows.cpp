// item_rows.cpp: the touched rows of the item table (see item_rows.h).
#include "sasrec/item_rows.h"

#include "sasrec/error.h"

namespace sasrec {

ItemRows gather_item_rows(const torch::Tensor& weight, const std::vector<torch::Tensor*>& parts) {
  std::vector<torch::Tensor> flat;
  for (const auto* p : parts)
    if (p->defined()) flat.push_back(p->reshape(-1));
  SASREC_CHECK(!flat.empty(), "gather_item_rows: no ids");
  auto [ids, inverse] = at::_unique(torch::cat(flat), /*sorted=*/true, /*return_inverse=*/true);
  int64_t offset = 0;
  for (auto* p : parts) {
    if (!p->defined()) continue;
    const int64_t n = p->numel();
    *p = inverse.slice(0, offset, offset + n).view(p->sizes());
    offset += n;
  }
  ItemRows rows;
  rows.ids = ids;
  rows.table = weight.detach().index_select(0, ids).requires_grad_(true);
  return rows;
}

RowGradient sum_duplicate_rows(const torch::Tensor& ids, const torch::Tensor& values) {
  SASREC_CHECK(ids.dim() == 1 && values.dim() == 2 && ids.size(0) == values.size(0),
               "sum_duplicate_rows: ids [R] and values [R,d]");
  auto [unique, inverse] = at::_unique(ids, /*sorted=*/true, /*return_inverse=*/true);
  RowGradient out;
  out.ids = unique;
  if (unique.size(0) == ids.size(0)) {  // no repeats: a permutation
    out.values = torch::empty_like(values).index_copy_(0, inverse, values);
    return out;
  }
  // Sequential in the order of `ids` (index_add_ on CPU walks the index in
  // order for each row slice), so every rank computes the same float sums.
  out.values = torch::zeros({unique.size(0), values.size(1)}, values.options()).index_add_(0, inverse, values);
  return out;
}

RowGradient allgather_rows(Communicator& comm, const torch::Tensor& ids, const torch::Tensor& values) {
  if (comm.world_size() == 1) return sum_duplicate_rows(ids, values);
  auto all_ids = comm.allgather(ids.contiguous());
  auto all_values = comm.allgather(values.contiguous());
  return sum_duplicate_rows(all_ids, all_values);
}

int64_t allreduce_wire_bytes(int64_t bytes, int world) {
  return world <= 1 ? 0 : 2 * bytes * (world - 1) / world;
}

int64_t allgather_wire_bytes(int64_t total_bytes, int world) {
  return world <= 1 ? 0 : total_bytes * (world - 1) / world;
}

}  // namespace sasrec
