// pod_buf.h: PodBuf, the growable array behind csv2h5's rows, ids and
// hash table (internal to the text import; csv_import.h is its API).
//
// Owns the array's growth and lifetime; the mappings themselves are the
// platform's (platform.h). Not a general container: T is trivially
// copyable and nothing is constructed or destroyed.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <utility>

#include "sasrec/platform.h"

namespace sasrec::text_import {

// A growable array of a trivially copyable T in its own anonymous mapping.
// It grows by remapping (pages are moved, not copied), on transparent huge
// pages (the row arrays are GBs: 4 KiB pages cost one fault each), and
// gives its memory back to the system when released. Fresh elements are
// zero; resize() does not initialise elements that were in use before.
template <typename T>
class PodBuf {
  static_assert(std::is_trivially_copyable_v<T>);

 public:
  PodBuf() = default;
  explicit PodBuf(size_t n) { resize(n); }
  ~PodBuf() { release(); }
  PodBuf(PodBuf&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)), bytes_(std::exchange(o.bytes_, 0)) {}
  PodBuf& operator=(PodBuf&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  PodBuf(const PodBuf&) = delete;
  PodBuf& operator=(const PodBuf&) = delete;

  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  bool empty() const { return n_ == 0; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }
  T* begin() { return p_; }
  T* end() { return p_ + n_; }

  void push_back(T v) {
    if (n_ * sizeof(T) == bytes_) grow(n_ + 1);
    p_[n_++] = v;
  }
  void append(const T* v, size_t n) {
    if ((n_ + n) * sizeof(T) > bytes_) grow(n_ + n);
    std::memcpy(p_ + n_, v, n * sizeof(T));
    n_ += n;
  }
  void resize(size_t n) {
    if (n * sizeof(T) > bytes_) grow(n);
    n_ = n;
  }
  void release() {
    if (p_) platform::unmap_pages(p_, bytes_);
    p_ = nullptr;
    n_ = bytes_ = 0;
  }

 private:
  static constexpr size_t kHuge = size_t{2} << 20;

  void grow(size_t need) {
    size_t bytes = std::max(need * sizeof(T), std::max<size_t>(bytes_ * 2, 64 << 10));
    bytes = (bytes + kHuge - 1) / kHuge * kHuge;
    p_ = static_cast<T*>(platform::map_pages(p_, bytes_, bytes));
    bytes_ = bytes;
  }

  T* p_ = nullptr;
  size_t n_ = 0;
  size_t bytes_ = 0;
};

}  // namespace sasrec::text_import
