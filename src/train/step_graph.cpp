// step_graph.cpp: token buckets and padded step inputs for runtime.cuda_graphs
// (see step_graph.h); the capture is in step_graph_cuda.cpp.
#include "sasrec/step_graph.h"

#include <algorithm>

#include "sasrec/error.h"

namespace sasrec {

std::vector<int64_t> token_buckets(int64_t max_tokens) {
  SASREC_CHECK(max_tokens >= 1, "token_buckets(", max_tokens, ")");
  constexpr int64_t kGrain = 64;
  std::vector<int64_t> out;
  for (int64_t b = kGrain; b < max_tokens; b = (b * 5 / 4 + kGrain - 1) / kGrain * kGrain) out.push_back(b);
  out.push_back(max_tokens);
  return out;
}

int64_t bucket_for(const std::vector<int64_t>& buckets, int64_t tokens) {
  auto it = std::lower_bound(buckets.begin(), buckets.end(), tokens);
  SASREC_CHECK(it != buckets.end(), tokens, " tokens exceed the largest bucket (", buckets.back(), ")");
  return *it;
}

int64_t padded_batch(const std::vector<int64_t>& buckets, int64_t batch_size, int64_t width) {
  int64_t gap = buckets.front() - 1;  // a batch of one token in the first bucket
  for (size_t i = 1; i < buckets.size(); ++i) gap = std::max(gap, buckets[i] - buckets[i - 1] - 1);
  return batch_size + (gap + width - 1) / width;
}

PaddedInputs pad_inputs(const StepInputs& in, int64_t tokens, int64_t batch, int64_t width) {
  const Packing& p = in.packing;
  const int64_t n = p.items.size(0), B = p.batch, T = p.width;
  const int64_t pad = tokens - n, pad_rows = (pad + width - 1) / width;
  SASREC_CHECK(pad >= 0 && T <= width && B + pad_rows <= batch, "cannot pad ", n, " tokens of ", B, " sequences to ",
               tokens, " tokens in ", batch, " sequences of width ", width);
  auto i64 = torch::TensorOptions().dtype(torch::kInt64);
  // Padding sequence r (0-based) holds `count(r)` tokens, right-aligned, the last one the remainder.
  auto count = [&](int64_t r) { return std::min(width, pad - r * width); };
  std::vector<int64_t> idx, pos;
  idx.reserve(pad), pos.reserve(pad);
  for (int64_t r = 0; r < pad_rows; ++r)
    for (int64_t j = 0; j < count(r); ++j) {
      idx.push_back((B + r) * width + (width - count(r)) + j);
      pos.push_back(width - count(r) + j);
    }
  PaddedInputs out;
  StepInputs& s = out.inputs;
  Packing& q = s.packing;
  q.batch = batch, q.width = width;
  // Real tokens: column c of width T is column c + (width - T) of width `width`; positions are unchanged.
  auto real_index = p.index.div(T, "floor") * width + p.index.remainder(T) + (width - T);
  q.index = torch::cat({real_index, torch::tensor(idx, i64)});
  q.items = torch::cat({p.items, torch::zeros({pad}, i64)});
  q.positions = torch::cat({p.positions, torch::tensor(pos, i64)});
  q.sequence = q.index.div(width, "floor");
  auto lengths = torch::zeros({batch}, i64);
  lengths.slice(0, 0, B).copy_(p.offsets.slice(0, 1) - p.offsets.slice(0, 0, B));
  for (int64_t r = 0; r < pad_rows; ++r) lengths[B + r] = count(r);
  q.offsets = torch::cat({torch::zeros({1}, i64), lengths.cumsum(0)});
  s.pos = torch::cat({in.pos, torch::ones({pad}, i64)});
  if (in.neg.defined()) {
    std::vector<int64_t> shape = in.neg.sizes().vec();
    shape[0] = pad;
    s.neg = torch::cat({in.neg, torch::ones(shape, i64)});
  }
  s.shared = in.shared;
  s.shared_log_q = in.shared_log_q;
  s.users = torch::cat({in.users, torch::zeros({batch - in.users.size(0)}, i64)});
  out.weight = torch::cat({torch::ones({n}), torch::zeros({pad})});
  return out;
}

}  // namespace sasrec
