// dropout_bits.h: which elements a counter-based dropout mask keeps, without
// Torch, so that the tensor path (dropout.h), the fused attention kernel
// (attention.h) and the explicit layers (fused_layers.h) draw the same masks.
#pragma once

#include <cstdint>

#include "sasrec/rng.h"

namespace sasrec {

// Element e of the mask stream `key` is kept when 16 bits of
// splitmix64(key ^ (e / 4) * golden) (bits 16*(e % 4) on) fall below the
// threshold: dropout_mask() and the fused kernels draw the same way.
inline uint32_t dropout_threshold(double p) { return static_cast<uint32_t>((1.0 - p) * 65536.0 + 0.5); }
inline bool dropout_keeps(uint64_t key, int64_t e, uint32_t threshold) {
  const uint64_t h = splitmix64(key ^ (static_cast<uint64_t>(e / 4) * 0x9E3779B97F4A7C15ull));
  return ((h >> (16 * (e % 4))) & 0xFFFF) < threshold;
}

}  // namespace sasrec
