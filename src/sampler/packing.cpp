// packing.cpp: packed tokens and the staged step inputs (see packing.h).
#include "sasrec/packing.h"

#include <algorithm>
#include <vector>

#include "sasrec/error.h"
#include "sasrec/sampler.h"

namespace sasrec {
Packing pack_sequences(const torch::Tensor& seq, int64_t maxlen) {
  TORCH_CHECK(seq.dim() == 2 && seq.scalar_type() == torch::kInt64, "seq must be [B,T] int64");
  const int64_t B = seq.size(0), T = seq.size(1);
  TORCH_CHECK(T >= 1 && T <= maxlen, "sequence width ", T, " outside 1..maxlen=", maxlen);
  Packing p;
  p.batch = B;
  p.width = T;
  auto flat = seq.reshape({-1});
  auto is_item = flat != 0;
  p.index = is_item.nonzero().squeeze(1);                                             // [N]
  p.items = flat.index_select(0, p.index);                                            // [N]
  p.positions = p.index.remainder(T) + (maxlen - T);                                  // column t -> P[maxlen - T + t]
  p.sequence = p.index.div(T, "floor");                                               // [N]
  auto lengths = is_item.view({B, T}).sum(1).cpu();                                   // [B]
  p.offsets = torch::cat({torch::zeros({1}, lengths.options()), lengths.cumsum(0)});  // [B+1]
  return p;
}

torch::Tensor unpack_rows(const Packing& packing, const torch::Tensor& x) {
  const int64_t d = x.size(1);
  return torch::zeros({packing.batch * packing.width, d}, x.options())
      .index_copy(0, packing.index, x)
      .view({packing.batch, packing.width, d});
}

void left_pad_last(const int32_t* items, int64_t n, int64_t width, int64_t* row) {
  const int64_t len = std::min(width, n);
  std::fill(row, row + width - len, int64_t{0});
  for (int64_t t = 0; t < len; ++t) row[width - len + t] = items[n - len + t];
}

StepInputs stage_inputs(const Batch& batch, int64_t maxlen, bool pin) {
  StepInputs s;
  s.packing = pack_sequences(batch.seq, maxlen);
  const auto& index = s.packing.index;
  auto pick = [&](const torch::Tensor& x) {  // [B,T] -> the [N] packed rows; [B,T,k] -> [N,k]
    if (!x.defined()) return x;
    auto flat = x.dim() == 3 ? x.reshape({-1, x.size(2)}) : x.reshape({-1});
    return flat.index_select(0, index);
  };
  s.pos = pick(batch.pos);
  s.neg = pick(batch.neg);
  s.shared = batch.shared;
  s.shared_log_q = batch.shared_log_q;
  s.users = batch.users;
  // One buffer, each part at an 8-byte aligned offset.
  auto parts = s.staged_tensors();
  int64_t bytes = 0;
  for (auto* t : parts)
    if (t->defined()) bytes += (t->numel() * t->element_size() + 7) / 8 * 8;
  s.staging = torch::empty({bytes}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(pin));
  int64_t offset = 0;
  for (auto* t : parts) {
    if (!t->defined()) continue;
    const int64_t n = t->numel() * t->element_size();
    auto view = s.staging.narrow(0, offset, n).view(t->scalar_type()).view(t->sizes());
    view.copy_(*t);
    *t = view;
    offset += (n + 7) / 8 * 8;
  }
  return s;
}

std::vector<torch::Tensor*> StepInputs::staged_tensors() {
  return {&packing.items, &packing.positions, &packing.index, &packing.sequence, &pos, &neg,
          &shared,        &shared_log_q,      &users};
}

StepInputs StepInputs::to(torch::Device device) const {
  if (device == staging.device()) return *this;
  StepInputs out = *this;
  out.staging = staging.to(device, /*non_blocking=*/staging.is_pinned());
  const auto* base = static_cast<const uint8_t*>(staging.data_ptr());
  for (auto* t : out.staged_tensors()) {
    if (!t->defined()) continue;
    const int64_t offset = static_cast<const uint8_t*>(t->data_ptr()) - base;
    SASREC_CHECK(offset >= 0 && offset + t->numel() * t->element_size() <= staging.numel(),
                 "a step input outside its staging buffer");
    *t = out.staging.narrow(0, offset, t->numel() * t->element_size()).view(t->scalar_type()).view(t->sizes());
  }
  return out;
}

}  // namespace sasrec
