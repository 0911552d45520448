// string_index.h: the interning of ids for csv2h5 (internal to the text
// import; csv_import.h is its API): an id prepared as a lookup key (Key)
// and the table that numbers distinct ids 0..n-1 in order of first
// insertion (StringIndex).
//
// Owns the keys' hash and layout and the table. Does not own where ids come
// from (row_parser.cpp), their UTF-8 check (the parser's) nor what the
// indices become (csr_build.h). The lookup is inline: it runs once a row.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "sasrec/pod_buf.h"

namespace sasrec::text_import {

// An id prepared for lookup: its first 24 bytes as three zero-padded words
// (compared as integers, no memcmp), its length, a hash of all its bytes,
// and where the bytes are (for ids longer than 24 bytes).
struct Key {
  uint64_t w[3];
  uint64_t hash;
  const char* p;
  uint32_t len;
};

// The bytes of an id held in a Key's words.
inline constexpr size_t kKeyWords = 24;

// The low n bytes of a word, n = 0..8.
inline constexpr uint64_t kByteMask[9] = {
    0, 0xffull, 0xffffull, 0xffffffull, 0xffffffffull, 0xffffffffffull, 0xffffffffffffull, 0xffffffffffffffull, ~0ull};

// The hash of a key: folded 128-bit products of its words (wyhash's mixing).
inline uint64_t fold_mul(uint64_t a, uint64_t b) {
  const unsigned __int128 r = static_cast<unsigned __int128>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}

inline void finish_key(Key* k) {
  uint64_t h = fold_mul(k->w[0] ^ 0xa0761d6478bd642full, k->w[1] ^ 0xe7037ed1a0b428dbull);
  h = fold_mul(h ^ k->w[2], 0x8ebc6af09c88c6e3ull ^ k->len);
  for (size_t off = kKeyWords; off < k->len; off += 8) {  // ids longer than 24 bytes
    uint64_t v = 0;
    std::memcpy(&v, k->p + off, std::min<size_t>(8, k->len - off));
    h = fold_mul(h ^ v, 0x589965cc75374cc3ull);
  }
  k->hash = h;
}

// Key of [p, p+n) where 24 bytes from p may be read (a field of the read buffer).
inline Key key_padded(const char* p, size_t n) {
  Key k;
  std::memcpy(k.w, p, 24);
  k.w[0] &= kByteMask[n < 8 ? n : 8];
  k.w[1] &= kByteMask[n < 8 ? 0 : n < 16 ? n - 8 : 8];
  k.w[2] &= kByteMask[n < 16 ? 0 : n < 24 ? n - 16 : 8];
  k.p = p;
  k.len = static_cast<uint32_t>(n);
  finish_key(&k);
  return k;
}

// The same key from any bytes.
inline Key key_of(std::string_view s) {
  char tmp[24] = {};
  std::memcpy(tmp, s.data(), std::min(s.size(), kKeyWords));
  Key k;
  std::memcpy(k.w, tmp, 24);
  k.p = s.data();
  k.len = static_cast<uint32_t>(s.size());
  finish_key(&k);
  return k;
}

// Distinct ids -> 0..n-1 in order of first insertion; each id is stored once,
// NUL-terminated, in an arena. Open addressing with linear probing (load <=
// 1/2) over 32-byte slots holding the index, 24 bits of hash with the length,
// and the first 24 bytes of the id, so the lookup of a typical id is one
// cache line and three integer compares; the caller prefetches that line
// (prefetch()) a few rows ahead.
class StringIndex {
 public:
  StringIndex();

  void prefetch(uint64_t h) const { __builtin_prefetch(&slots_[h & mask_]); }

  int32_t intern(const Key& k) {
    const uint32_t tl = taglen(k);
    uint64_t i = k.hash & mask_;
    while (true) {
      const Slot& s = slots_[i];
      if (s.index1 == 0) break;
      if (s.taglen == tl && s.w[0] == k.w[0] && s.w[1] == k.w[1] && s.w[2] == k.w[2] &&
          (k.len <= kKeyWords || key(static_cast<int32_t>(s.index1 - 1)) == std::string_view(k.p, k.len)))
        return static_cast<int32_t>(s.index1 - 1);
      i = (i + 1) & mask_;
    }
    return insert(k, i);
  }

  // Frees the hash table (after the last intern()); key() still works.
  void drop_table() {
    slots_.release();
    mask_ = 0;
  }

  int64_t size() const { return static_cast<int64_t>(starts_.size()) - 1; }
  std::string_view key(int32_t k) const {
    return std::string_view(arena_.data() + starts_[k], starts_[k + 1] - starts_[k] - 1);
  }
  const char* c_str(int32_t k) const { return arena_.data() + starts_[k]; }

 private:
  struct alignas(32) Slot {
    uint32_t index1;  // index + 1; 0 = empty
    uint32_t taglen;  // 24 bits of hash, min(length, 255)
    uint64_t w[3];    // the first 24 bytes, zero-padded
  };
  static_assert(sizeof(Slot) == 32);

  static uint32_t taglen(const Key& k) {
    return (static_cast<uint32_t>(k.hash >> 32) & 0xFFFFFF00u) | std::min<uint32_t>(k.len, 255);
  }
  static void fill(Slot* s, const Key& k, int32_t idx) {
    s->index1 = static_cast<uint32_t>(idx) + 1;
    s->taglen = taglen(k);
    std::memcpy(s->w, k.w, sizeof(s->w));
  }

  // A new id into the empty slot `slot`: stored, numbered, the table grown when half full.
  int32_t insert(const Key& k, uint64_t slot) {
    if (size() >= kMaxIds) too_many();
    const int32_t idx = static_cast<int32_t>(size());
    arena_.append(k.p, k.len);
    arena_.push_back('\0');
    starts_.push_back(arena_.size());
    fill(&slots_[slot], k, idx);
    if (static_cast<uint64_t>(size()) * 2 > mask_) grow();
    return idx;
  }
  static constexpr int64_t kMaxIds = 2147483647 - 1;  // indices are int32
  [[noreturn]] static void too_many();
  void grow();

  PodBuf<char> arena_;
  PodBuf<uint64_t> starts_;
  PodBuf<Slot> slots_;
  uint64_t mask_ = 0;
};

}  // namespace sasrec::text_import
