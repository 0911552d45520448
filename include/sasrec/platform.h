// platform.h: what the data layer asks of the CPU and the operating system
// beyond standard C++, and the only place of the data layer with #if.
//
// Owns: the 64-byte scan for three byte values (SSE2 where the compiler
// targets it, a portable loop elsewhere; inline, it is csv2h5's inner
// loop), anonymous memory that grows without copying and asks for
// transparent huge pages (mmap, mremap, madvise), the hint that a file is
// read once from start to end (posix_fadvise) and the search for the last
// occurrence of a byte (memrchr). Does not own what uses them: the read
// buffer (line_reader.h), the growable arrays (pod_buf.h), the csv scanner
// (row_parser.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

namespace sasrec::platform {

// Bit k set where p[k] is one of the three bytes, for k in 0..63 (64
// readable bytes at p).
class ByteMask3 {
 public:
  ByteMask3(char a, char b, char c)
#ifdef __SSE2__
      : a_(_mm_set1_epi8(a)),
        b_(_mm_set1_epi8(b)),
        c_(_mm_set1_epi8(c))
#else
      : a_(a),
        b_(b),
        c_(c)
#endif
  {
  }

  uint64_t mask64(const char* p) const {
    uint64_t m = 0;
#ifdef __SSE2__
    for (int k = 0; k < 4; ++k) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k));
      const __m128i hit =
          _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, a_), _mm_cmpeq_epi8(v, b_)), _mm_cmpeq_epi8(v, c_));
      m |= static_cast<uint64_t>(static_cast<uint32_t>(_mm_movemask_epi8(hit))) << (16 * k);
    }
#else
    for (int k = 0; k < 64; ++k) m |= static_cast<uint64_t>(p[k] == a_ || p[k] == b_ || p[k] == c_) << k;
#endif
    return m;
  }

 private:
#ifdef __SSE2__
  __m128i a_, b_, c_;
#else
  char a_, b_, c_;
#endif
};

// Anonymous private memory of `bytes` bytes (a multiple of the page size):
// fresh when `old` is null, else `old` (of `old_bytes`) moved or grown in
// place, its contents kept and its pages moved, not copied. Transparent
// huge pages are asked for. New bytes are zero. Throws std::bad_alloc.
void* map_pages(void* old, size_t old_bytes, size_t bytes);
// Gives memory of map_pages back to the system.
void unmap_pages(void* p, size_t bytes);

// Tells the system that the file `fd` will be read once, sequentially
// (a larger read-ahead); nothing where that cannot be said.
void advise_sequential(int fd);

// The last c in [p, p + n), or null.
const char* find_last(const char* p, char c, size_t n);

}  // namespace sasrec::platform
