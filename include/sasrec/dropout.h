// dropout.h: inverted dropout with cheap, reproducible masks.
//
// libtorch's CPU dropout draws its Bernoulli mask element by element
// (measured: 24 ms for a 128x50x50 tensor on the 2-core dev machine, more
// than the step's matrix products). Here a mask element is 16 bits of a
// counter-based hash (splitmix64 of the stream's key, the call number and
// the element's index), four elements per hash, filled in parallel: under
// 1 ms, and the same mask whatever the thread count. Keep probability is
// quantized to 1/65536. On CUDA tensors libtorch's fused dropout is used.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>

#include "sasrec/dropout_bits.h"
#include "sasrec/rng.h"

namespace sasrec {

// A stream of dropout masks: reseed it (e.g. per epoch) for reproducible runs.
class DropoutStream {
 public:
  // `calls`: masks already drawn from this key (an interrupted epoch resumed).
  void reseed(uint64_t key, uint64_t calls = 0) {
    key_ = key;
    calls_ = calls;
  }
  uint64_t next_key();
  uint64_t calls() const { return calls_; }

 private:
  uint64_t key_ = 0x1234;
  uint64_t calls_ = 0;
};

// x * mask / (1 - p) with mask ~ Bernoulli(1 - p); x itself when not training or p == 0.
torch::Tensor dropout(const torch::Tensor& x, double p, bool training, DropoutStream& stream);

// The float mask (values 0 or 1/(1-p)) dropout would multiply by; exposed for tests.
torch::Tensor dropout_mask(const std::vector<int64_t>& shape, double p, uint64_t key, torch::ScalarType dtype);

}  // namespace sasrec
