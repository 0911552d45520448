// packing.cpp: packed tokens and the staged step inputs (see packing.h).
#include "sasrec/packing.h"

#include <algorithm>
#include <cstring>
#include <utility>
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
  // In loops on the host, straight into the buffer: the sampler threads build
  // a batch in a fraction of a step, and ~25 tensor ops (pack_sequences, the
  // picks, a copy per part) were most of it. pack_sequences is the reference
  // (tests/test_device_paths.cpp).
  const torch::Tensor& seq_t = batch.seq;
  TORCH_CHECK(seq_t.dim() == 2 && seq_t.scalar_type() == torch::kInt64 && seq_t.is_cpu(),
              "seq must be [B,T] int64 on the host");
  const int64_t B = seq_t.size(0), T = seq_t.size(1);
  TORCH_CHECK(T >= 1 && T <= maxlen, "sequence width ", T, " outside 1..maxlen=", maxlen);
  // pos [B,T]; neg [B,T] or [B,T,k]: a value per position of the batch.
  auto host_ids = [&](const torch::Tensor& x, const char* name, int64_t max_dim) {
    TORCH_CHECK(!x.defined() || (x.is_cpu() && x.scalar_type() == torch::kInt64 && x.dim() >= 2 &&
                                 x.dim() <= max_dim && x.size(0) == B && x.size(1) == T),
                name, " must be int64 on the host, [B,T] like the batch (neg: or [B,T,k])");
    return x.defined() ? x.contiguous() : x;
  };
  const torch::Tensor seq = seq_t.contiguous(), pos = host_ids(batch.pos, "pos", 2),
                      neg = host_ids(batch.neg, "neg", 3);
  const int64_t k = neg.defined() ? (neg.dim() == 3 ? neg.size(2) : 1) : 0;
  const int64_t* in = seq.data_ptr<int64_t>();
  int64_t N = 0;
  for (int64_t i = 0; i < B * T; ++i) N += in[i] != 0;

  StepInputs s;
  s.packing.batch = B, s.packing.width = T;
  // The parts in staged_tensors() order, each at an 8-byte aligned offset of one buffer: the packed ones
  // are filled below, the others (source defined) copied in.
  struct Part {
    torch::Tensor* out;
    std::vector<int64_t> sizes;
    torch::ScalarType type;
    torch::Tensor source;
  };
  std::vector<Part> parts{{&s.packing.items, {N}, torch::kInt64, {}},
                          {&s.packing.positions, {N}, torch::kInt64, {}},
                          {&s.packing.index, {N}, torch::kInt64, {}},
                          {&s.packing.sequence, {N}, torch::kInt64, {}}};
  if (pos.defined()) parts.push_back({&s.pos, {N}, torch::kInt64, {}});
  if (neg.defined())
    parts.push_back({&s.neg, neg.dim() == 3 ? std::vector<int64_t>{N, k} : std::vector<int64_t>{N}, torch::kInt64, {}});
  const std::pair<torch::Tensor*, const torch::Tensor*> copied[] = {
      {&s.shared, &batch.shared}, {&s.shared_log_q, &batch.shared_log_q}, {&s.users, &batch.users}};
  for (const auto& [out, t] : copied) {
    if (!t->defined()) continue;
    TORCH_CHECK(t->is_cpu(), "the shared negatives, their log-Q and the users must be on the host");
    parts.push_back({out, t->sizes().vec(), t->scalar_type(), t->contiguous()});
  }
  auto part_bytes = [](const Part& p) {
    return c10::multiply_integers(p.sizes) * static_cast<int64_t>(c10::elementSize(p.type));
  };
  int64_t bytes = 0;
  for (const Part& p : parts) bytes += (part_bytes(p) + 7) / 8 * 8;
  s.staging = torch::empty({bytes}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(pin));
  int64_t offset = 0;
  for (const Part& p : parts) {
    const int64_t n = part_bytes(p);
    *p.out = s.staging.narrow(0, offset, n).view(p.type).view(p.sizes);
    if (p.source.defined()) std::memcpy(p.out->data_ptr(), p.source.data_ptr(), n);
    offset += (n + 7) / 8 * 8;
  }
  s.packing.offsets = torch::empty({B + 1}, torch::kInt64);
  int64_t *items = s.packing.items.data_ptr<int64_t>(), *positions = s.packing.positions.data_ptr<int64_t>(),
          *index = s.packing.index.data_ptr<int64_t>(), *sequence = s.packing.sequence.data_ptr<int64_t>(),
          *offsets = s.packing.offsets.data_ptr<int64_t>();
  const int64_t* pos_in = pos.defined() ? pos.data_ptr<int64_t>() : nullptr;
  const int64_t* neg_in = neg.defined() ? neg.data_ptr<int64_t>() : nullptr;
  int64_t* pos_out = pos.defined() ? s.pos.data_ptr<int64_t>() : nullptr;
  int64_t* neg_out = neg.defined() ? s.neg.data_ptr<int64_t>() : nullptr;
  int64_t n = 0;
  offsets[0] = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t flat = b * T + t;
      if (in[flat] == 0) continue;
      items[n] = in[flat], index[n] = flat, sequence[n] = b;
      positions[n] = t + (maxlen - T);  // column t -> P[maxlen - T + t]
      if (pos_out) pos_out[n] = pos_in[flat];
      if (neg_out) std::memcpy(neg_out + n * k, neg_in + flat * k, sizeof(int64_t) * k);
      ++n;
    }
    offsets[b + 1] = n;
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
