// item_rows.cpp: the touched rows of the item table (see item_rows.h).
#include "sasrec/item_rows.h"

#include <algorithm>

#include "sasrec/error.h"

namespace sasrec {

namespace {

bool cpu_ids(const std::vector<torch::Tensor*>& parts) {
  bool cpu = true;
  for (const auto* p : parts)
    cpu = cpu && (!p->defined() || (p->device().is_cpu() && p->scalar_type() == torch::kInt64 && p->is_contiguous()));
  return cpu;
}

// unique_and_remap on the CPU in loops: the distinct ids found through a
// per-thread slot array over the table's rows (kept all -1 between calls),
// put in order (a scan of the slots, or a sort of only them), every id then
// remapped in O(1); two allocations instead
// of ~20 tensor ops, _unique's hash set among them (0.24 ms of a 4 ms Beauty
// step, docs/results.md).
torch::Tensor unique_and_remap_cpu(const std::vector<torch::Tensor*>& parts, int64_t rows_in) {
  thread_local std::vector<int32_t> slot;  // row -> its index in the copy during a call, else -1
  if (static_cast<int64_t>(slot.size()) < rows_in) slot.resize(rows_in, -1);
  for (const auto* p : parts) {  // checked before any slot is touched
    if (!p->defined()) continue;
    const int64_t* in = p->data_ptr<int64_t>();  // once: data_ptr checks the tensor at every call
    for (int64_t i = 0; i < p->numel(); ++i)
      SASREC_CHECK(in[i] >= 0 && in[i] < rows_in, "item rows: id ", in[i], " outside [0, ", rows_in, ")");
  }
  std::vector<int64_t> ids;
  int64_t total = 0;
  for (const auto* p : parts) {
    if (!p->defined()) continue;
    const int64_t* in = p->data_ptr<int64_t>();
    for (int64_t i = 0; i < p->numel(); ++i)
      if (slot[in[i]] == -1) slot[in[i]] = 0, ids.push_back(in[i]);
    total += p->numel();
  }
  // In ascending order: where the ids are many against the rows (Beauty: ~2,500 of 12,102) a scan of
  // the slots finds them in order for less than sorting them (~0.1 ms a step, serial); few ids in a
  // large table are sorted.
  if (rows_in <= 64 * static_cast<int64_t>(ids.size())) {
    ids.clear();
    for (int64_t r = 0; r < rows_in; ++r)
      if (slot[r] == 0) ids.push_back(r);
  } else {
    std::sort(ids.begin(), ids.end());
  }
  const int64_t U = static_cast<int64_t>(ids.size());
  for (int64_t r = 0; r < U; ++r) slot[ids[r]] = static_cast<int32_t>(r);
  auto remapped = torch::empty({total}, torch::kInt64);  // every part's row indices, back to back
  int64_t* out = remapped.data_ptr<int64_t>();
  int64_t offset = 0;
  for (auto* p : parts) {
    if (!p->defined()) continue;
    const int64_t* in = p->data_ptr<int64_t>();
    const int64_t n = p->numel();
    for (int64_t i = 0; i < n; ++i) out[offset + i] = slot[in[i]];
    *p = torch::from_blob(
        out + offset, p->sizes(), [keep = remapped](void*) {}, torch::kInt64);
    offset += n;
  }
  for (int64_t id : ids) slot[id] = -1;
  auto unique = torch::empty({U}, torch::kInt64);
  std::copy(ids.begin(), ids.end(), unique.data_ptr<int64_t>());
  return unique;
}

}  // namespace

torch::Tensor unique_and_remap(const std::vector<torch::Tensor*>& parts, int64_t rows) {
  if (cpu_ids(parts)) return unique_and_remap_cpu(parts, rows);
  std::vector<torch::Tensor> flat;
  for (const auto* p : parts)
    if (p->defined()) flat.push_back(p->reshape(-1));
  if (flat.empty()) return torch::empty({0}, torch::kInt64);
  auto [ids, inverse] = at::_unique(torch::cat(flat), /*sorted=*/true, /*return_inverse=*/true);
  int64_t offset = 0;
  for (auto* p : parts) {
    if (!p->defined()) continue;
    const int64_t n = p->numel();
    *p = inverse.slice(0, offset, offset + n).view(p->sizes());
    offset += n;
  }
  return ids;
}

ItemRows gather_item_rows(const torch::Tensor& weight, const std::vector<torch::Tensor*>& parts) {
  ItemRows rows;
  rows.ids = unique_and_remap(parts, weight.size(0));
  SASREC_CHECK(rows.ids.numel() > 0, "gather_item_rows: no ids");
  const int64_t U = rows.ids.size(0), d = weight.size(1);
  if (weight.device().is_cpu() && weight.scalar_type() == torch::kFloat32 && weight.is_contiguous() &&
      rows.ids.device().is_cpu()) {
    rows.table = torch::empty({U, d}, weight.options());
    const float* w = weight.data_ptr<float>();
    const int64_t* id = rows.ids.data_ptr<int64_t>();
    float* t = rows.table.data_ptr<float>();
    for (int64_t r = 0; r < U; ++r) {  // a loop, not a memcpy call per row of d floats (~2,500 a Beauty step)
      const float* from = w + id[r] * d;
      float* to = t + r * d;
      for (int64_t j = 0; j < d; ++j) to[j] = from[j];
    }
  } else {
    rows.table = weight.detach().index_select(0, rows.ids.to(weight.device()));
  }
  rows.table.set_requires_grad(true);
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

int64_t allreduce_wire_bytes(int64_t bytes, int world) { return world <= 1 ? 0 : 2 * bytes * (world - 1) / world; }

int64_t allgather_wire_bytes(int64_t total_bytes, int world) {
  return world <= 1 ? 0 : total_bytes * (world - 1) / world;
}

}  // namespace sasrec
