// dropout.cpp: counter-based dropout masks (see dropout.h).
#include "sasrec/dropout.h"

#include <ATen/Parallel.h>

#include "sasrec/rng.h"

namespace sasrec {

uint64_t DropoutStream::next_key() { return mix_seed({key_, ++calls_}); }

torch::Tensor dropout_mask(const std::vector<int64_t>& shape, double p, uint64_t key, torch::ScalarType dtype) {
  auto mask = torch::empty(shape, torch::kFloat32);
  float* out = mask.data_ptr<float>();
  const int64_t n = mask.numel();
  const uint32_t threshold = dropout_threshold(p);  // keep when h16 < threshold (dropout_keeps, four at a time)
  const float scale = static_cast<float>(1.0 / (1.0 - p));
  const int64_t words = (n + 3) / 4;
  at::parallel_for(0, words, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t w = begin; w < end; ++w) {
      uint64_t h = splitmix64(key ^ (static_cast<uint64_t>(w) * 0x9E3779B97F4A7C15ull));
      const int64_t base = w * 4;
      const int64_t m = std::min<int64_t>(4, n - base);
      for (int64_t j = 0; j < m; ++j, h >>= 16) out[base + j] = (h & 0xFFFF) < threshold ? scale : 0.0f;
    }
  });
  return dtype == torch::kFloat32 ? mask : mask.to(dtype);
}

torch::Tensor dropout(const torch::Tensor& x, double p, bool training, DropoutStream& stream) {
  if (!training || p <= 0) return x;
  if (!x.device().is_cpu()) return torch::dropout(x, p, true);
  return x * dropout_mask(x.sizes().vec(), p, stream.next_key(), x.scalar_type());
}

}  // namespace sasrec
