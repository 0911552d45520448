// fnv.h: FNV-1a, 64 bits: the checksum of checkpoint payloads and the
// fingerprint of a store's item map. Not a cryptographic hash: it finds
// corruption and mix-ups, not tampering.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sasrec {

inline constexpr uint64_t kFnvBasis = 0xcbf29ce484222325ull;

// FNV-1a-64 of `n` bytes, continuing from `h` (kFnvBasis for a fresh hash).
inline uint64_t fnv1a64(const void* data, size_t n, uint64_t h = kFnvBasis) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace sasrec
