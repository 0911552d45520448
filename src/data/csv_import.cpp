// csv_import.cpp: the text readers of csv2h5 (csv, pairs, seq), format and
// column detection, time parsing, the k-core filter, the mapping of raw ids
// to dense indices and the per-user layout; see csv_import.h for the contract.
//
// The hot loop reads ~1 MiB blocks of whole lines with read(2) and finds the
// delimiters, newlines and quotes of a block 64 bytes at a time (SSE2 byte
// compares into a bit mask); a line of plain fields becomes string_views into
// the buffer with no allocation and no per-line library call, anything else
// (quotes, blanks, errors) takes the general per-line path. Ids are interned
// in an open-addressing StringIndex (the first 24 bytes of an id compared as
// three integers), with the hash slots of the next 16 rows prefetched. Rows
// are kept as int32 user, int32 item and (with a time column) int64 time, in
// huge-page mappings: 8 or 16 bytes per row. The per-user layout (CSR) is
// built by counting and one scatter (none when the rows are already grouped
// by user), then each user's rows are sorted by time only where out of order.
#include "sasrec/csv_import.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <deque>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "sasrec/atomic_file.h"
#include "sasrec/error.h"

namespace sasrec {

using detail::cat;

const char* format_name(InputFormat f) {
  switch (f) {
    case InputFormat::Auto: return "auto";
    case InputFormat::Csv: return "csv";
    case InputFormat::Pairs: return "pairs";
    case InputFormat::Seq: return "seq";
  }
  return "?";
}

InputFormat parse_input_format(const std::string& name) {
  if (name == "auto") return InputFormat::Auto;
  if (name == "csv") return InputFormat::Csv;
  if (name == "pairs") return InputFormat::Pairs;
  if (name == "seq") return InputFormat::Seq;
  SASREC_FAIL(Input, "unknown format '", name, "'; use auto, csv, pairs or seq");
}

// ---- time parsing ---------------------------------------------------------------------

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

int days_in_month(int y, int m) {
  static constexpr int kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : kDays[m - 1];
}

// Reads exactly n digits at p into v.
bool digits(const char* p, const char* end, int n, int* v) {
  if (end - p < n) return false;
  int x = 0;
  for (int i = 0; i < n; ++i) {
    if (p[i] < '0' || p[i] > '9') return false;
    x = x * 10 + (p[i] - '0');
  }
  *v = x;
  return true;
}

bool parse_iso(const char* p, const char* end, int64_t* out) {
  int y, mo, d, h = 0, mi = 0, s = 0;
  if (!digits(p, end, 4, &y) || end - p < 10 || p[4] != '-' || !digits(p + 5, end, 2, &mo) || p[7] != '-' ||
      !digits(p + 8, end, 2, &d))
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo)) return false;  // 2019-02-29, 2020-04-31: no such day
  p += 10;
  if (p < end && (*p == 'T' || *p == ' ')) {
    if (!digits(p + 1, end, 2, &h) || end - p < 6 || p[3] != ':' || !digits(p + 4, end, 2, &mi)) return false;
    p += 6;
    if (p < end && *p == ':') {
      if (!digits(p + 1, end, 2, &s)) return false;
      p += 3;
      if (p < end && *p == '.') {  // fractional seconds: truncated
        ++p;
        const char* q = p;
        while (p < end && *p >= '0' && *p <= '9') ++p;
        if (p == q) return false;
      }
    }
    if (h > 23 || mi > 59 || s > 60) return false;
  }
  if (p < end && *p == 'Z') ++p;
  if (p != end) return false;
  *out = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s;
  return true;
}

}  // namespace

bool parse_time(const char* p, const char* end, int64_t* out) {
  if (p == end) return false;
  // Plain integer: the fast, common case.
  {
    const char* q = p;
    bool neg = false;
    if (*q == '-' || *q == '+') neg = *q++ == '-';
    if (q < end) {
      uint64_t v = 0;
      const char* r = q;
      while (r < end && *r >= '0' && *r <= '9' && v <= (std::numeric_limits<uint64_t>::max() - 9) / 10) {
        v = v * 10 + static_cast<uint64_t>(*r - '0');
        ++r;
      }
      constexpr uint64_t kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
      if (r == end && (v <= kMax || (neg && v == kMax + 1))) {  // -2^63 too
        *out = v <= kMax ? (neg ? -static_cast<int64_t>(v) : static_cast<int64_t>(v))
                         : std::numeric_limits<int64_t>::min();
        return true;
      }
    }
  }
  if (end - p >= 10 && p[4] == '-' && parse_iso(p, end, out)) return true;
  double d = 0;
  const char* q = (*p == '+') ? p + 1 : p;
  auto [ptr, ec] = std::from_chars(q, end, d);
  if (ec != std::errc() || ptr != end || !std::isfinite(d) || std::fabs(d) >= 9.2e18) return false;
  *out = std::llround(d);
  return true;
}

namespace {

// ---- memory ---------------------------------------------------------------------------------

// A growable array of a trivially copyable T in its own anonymous mapping.
// It grows with mremap (pages are moved, not copied), asks for transparent
// huge pages (the row arrays are GBs: 4 KiB pages cost one fault each) and
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
    if (p_) munmap(p_, bytes_);
    p_ = nullptr;
    n_ = bytes_ = 0;
  }

 private:
  static constexpr size_t kHuge = size_t{2} << 20;

  void grow(size_t need) {
    size_t bytes = std::max(need * sizeof(T), std::max<size_t>(bytes_ * 2, 64 << 10));
    bytes = (bytes + kHuge - 1) / kHuge * kHuge;
    void* q = p_ ? mremap(p_, bytes_, bytes, MREMAP_MAYMOVE)
                 : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (q == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    madvise(q, bytes, MADV_HUGEPAGE);
#endif
    p_ = static_cast<T*>(q);
    bytes_ = bytes;
  }

  T* p_ = nullptr;
  size_t n_ = 0;
  size_t bytes_ = 0;
};

// ---- ids as keys ----------------------------------------------------------------------------

// An id prepared for lookup: its first 24 bytes as three zero-padded words
// (compared as integers, no memcmp), its length, a hash of all its bytes,
// and where the bytes are (for ids longer than 24 bytes).
struct Key {
  uint64_t w[3];
  uint64_t hash;
  const char* p;
  uint32_t len;
};

constexpr size_t kKeyWords = 24;
// Readable bytes after any field of the read buffer (and after the buffer).
constexpr size_t kPad = 64;

constexpr uint64_t kByteMask[9] = {0,
                                   0xffull,
                                   0xffffull,
                                   0xffffffull,
                                   0xffffffffull,
                                   0xffffffffffull,
                                   0xffffffffffffull,
                                   0xffffffffffffffull,
                                   ~0ull};

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

// ---- string interning -----------------------------------------------------------------------

// Distinct ids -> 0..n-1 in order of first insertion; each id is stored once,
// NUL-terminated, in an arena. Open addressing with linear probing (load <=
// 1/2) over 32-byte slots holding the index, 24 bits of hash with the length,
// and the first 24 bytes of the id, so the lookup of a typical id is one
// cache line and three integer compares; the caller prefetches that line
// (prefetch()) a few rows ahead.
class StringIndex {
 public:
  StringIndex() {
    starts_.push_back(0);
    slots_.resize(1024);
    mask_ = 1023;
  }

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
    if (size() >= std::numeric_limits<int32_t>::max() - 1)
      SASREC_FAIL(Input, "more than 2^31 - 2 distinct ids; split the input");
    const int32_t idx = static_cast<int32_t>(size());
    arena_.append(k.p, k.len);
    arena_.push_back('\0');
    starts_.push_back(arena_.size());
    fill(&slots_[i], k, idx);
    if (static_cast<uint64_t>(size()) * 2 > mask_) grow();
    return idx;
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

  void grow() {
    PodBuf<Slot> bigger((mask_ + 1) * 2);  // fresh pages: zero
    mask_ = bigger.size() - 1;
    for (int32_t idx = 0; idx < size(); ++idx) {
      const Key k = key_of(key(idx));
      uint64_t i = k.hash & mask_;
      while (bigger[i].index1 != 0) i = (i + 1) & mask_;
      fill(&bigger[i], k, idx);
    }
    slots_ = std::move(bigger);
  }

  PodBuf<char> arena_;
  PodBuf<uint64_t> starts_;
  PodBuf<Slot> slots_;
  uint64_t mask_ = 0;
};

// ---- line reading ---------------------------------------------------------------------------

// Reads the input once, as a stream, through a buffer refilled with read(2):
// a regular file, a FIFO, /dev/stdin, "-" (standard input) or a process
// substitution (<(zcat f.gz)) alike, so nothing is read twice. Either line by
// line (next(): without "\n" or "\r\n", the UTF-8 byte order mark removed)
// or as blocks of whole lines (next_block()); peek() shows the first lines
// without consuming them (format detection). Views stay valid until the next
// call; kPad readable bytes follow every view.
class LineReader {
 public:
  LineReader(const std::string& path, size_t buffer_bytes) : path_(path == "-" ? "stdin" : path) {
    if (path == "-") {
      fd_ = STDIN_FILENO;
    } else {
      struct stat st;
      if (stat(path.c_str(), &st) != 0)
        SASREC_FAIL(Input, path, ": no such file (", std::strerror(errno), "); check the input path");
      if (S_ISDIR(st.st_mode)) SASREC_FAIL(Input, path, ": is a directory; give the input file");
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // a FIFO waits here for its writer
      if (fd_ < 0) SASREC_FAIL(Input, path, ": cannot open (", std::strerror(errno), "); check its permissions");
      owns_fd_ = true;
    }
    struct stat st;
    regular_ = fstat(fd_, &st) == 0 && S_ISREG(st.st_mode);
#ifdef POSIX_FADV_SEQUENTIAL
    if (regular_) posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    allocate(std::max<size_t>(buffer_bytes, 4096));
  }
  ~LineReader() {
    if (owns_fd_) ::close(fd_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The unread bytes, after reading until they hold `lines` newlines, the
  // end of the input or `max_bytes`; nothing is consumed.
  std::string_view peek(size_t lines, size_t max_bytes) {
    size_t scanned = begin_, found = 0;
    while (true) {
      for (const char* p = buf_.get() + scanned; found < lines;) {
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', buf_.get() + end_ - p));
        if (!nl) break;
        ++found;
        p = nl + 1;
      }
      scanned = end_;
      if (found >= lines || eof_ || end_ - begin_ >= max_bytes) break;
      const size_t offset = scanned - begin_;
      refill();  // moves the unread bytes to the front
      scanned = begin_ + offset;
    }
    return std::string_view(buf_.get() + begin_, end_ - begin_);
  }
  bool at_eof_after_peek() const { return eof_; }

  bool next(std::string_view* line) {
    while (true) {
      const char* b = buf_.get() + begin_;
      const char* nl = nl_ ? nl_ : static_cast<const char*>(std::memchr(b, '\n', end_ - begin_));
      nl_ = nullptr;
      if (nl) {
        size_t n = nl - b;
        begin_ += n + 1;
        consumed_ += n + 1;
        ++line_;
        *line = clean_line(b, n, line_);
        return true;
      }
      if (eof_) {
        if (begin_ == end_) return false;
        size_t n = end_ - begin_;
        begin_ = end_;
        consumed_ += n;
        ++line_;
        *line = clean_line(b, n, line_);
        return true;
      }
      refill();
    }
  }

  // The next run of whole lines [*b, *e), each ending in '\n' except perhaps
  // the last line of the file; false at the end. Does not count lines: the
  // caller does (set_line_number()).
  bool next_block(const char** b, const char** e) {
    nl_ = nullptr;
    while (true) {
      if (begin_ < end_) {
        const char* p = buf_.get() + begin_;
        const char* last = eof_ ? buf_.get() + end_ - 1 : static_cast<const char*>(memrchr(p, '\n', end_ - begin_));
        if (last) {
          *b = p;
          *e = last + 1;
          consumed_ += *e - p;
          begin_ = *e - buf_.get();
          return true;
        }
      } else if (eof_) {
        return false;
      }
      refill();
    }
  }

  // True when next() will not refill the buffer, so views of earlier lines stay valid.
  bool line_buffered() {
    if (!nl_) nl_ = static_cast<const char*>(std::memchr(buf_.get() + begin_, '\n', end_ - begin_));
    return nl_ != nullptr || eof_;
  }

  int64_t line_number() const { return line_; }
  void set_line_number(int64_t line) { line_ = line; }
  int64_t consumed() const { return consumed_; }  // bytes handed out so far (the input's size at the end)
  const std::string& path() const { return path_; }  // "stdin" for "-"
  int fd() const { return fd_; }

  // A raw line (without its '\n') as next() gives it: no trailing '\r', no
  // byte order mark on line 1.
  static std::string_view clean_line(const char* b, size_t n, int64_t line) {
    if (line == 1 && n >= 3 && std::memcmp(b, "\xEF\xBB\xBF", 3) == 0) {  // UTF-8 byte order mark
      b += 3;
      n -= 3;
    }
    if (n && b[n - 1] == '\r') --n;
    return std::string_view(b, n);
  }

 private:
  void allocate(size_t cap) {
    std::unique_ptr<char[]> bigger(new char[cap + kPad]);
    if (end_ > begin_) std::memcpy(bigger.get(), buf_.get() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
    std::memset(bigger.get() + cap, 0, kPad);
    buf_ = std::move(bigger);
    cap_ = cap;
  }

  void refill() {
    if (begin_ > 0) {
      std::memmove(buf_.get(), buf_.get() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (end_ == cap_) allocate(cap_ * 2);  // a line longer than the buffer
    size_t got = 0;
    while (end_ < cap_) {
      ssize_t r = ::read(fd_, buf_.get() + end_, cap_ - end_);
      if (r < 0) {
        if (errno == EINTR) continue;
        SASREC_FAIL(Io, path_, ":", line_ + 1, ": read failed (", std::strerror(errno), "); check the disk");
      }
      if (r == 0) {
        eof_ = true;
        break;
      }
      if (const void* z = std::memchr(buf_.get() + end_, 0, r)) {
        const char* zp = static_cast<const char*>(z);
        int64_t line = line_ + 1 + std::count(static_cast<const char*>(buf_.get() + begin_), zp, '\n');
        SASREC_FAIL(Input, path_, ":", line,
                    ": binary data (a NUL byte); the input must be a text file (csv, pairs or seq). A compressed "
                    "file: decompress it on the fly, e.g. zcat FILE.gz | csv2h5 - OUT.h5");
      }
      end_ += r;
      got += r;
      if (got >= (1u << 20)) break;
    }
    std::memset(buf_.get() + end_, 0, kPad);  // reads past the data see zeros
  }

  std::string path_;
  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0;  // usable bytes; kPad more are allocated
  int fd_ = -1;
  bool owns_fd_ = false;
  bool regular_ = false;
  size_t begin_ = 0, end_ = 0;
  const char* nl_ = nullptr;  // the next newline, when already found
  bool eof_ = false;
  int64_t line_ = 0;
  int64_t consumed_ = 0;
};

// ---- field splitting -----------------------------------------------------------------------

inline bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

void split_whitespace(std::string_view line, std::vector<std::string_view>* out) {
  out->clear();
  const char* p = line.data();
  const char* e = p + line.size();
  while (true) {
    while (p < e && is_space(*p)) ++p;
    if (p == e) return;
    const char* q = p;
    while (q < e && !is_space(*q)) ++q;
    out->emplace_back(p, q - p);
    p = q;
  }
}

// CSV fields of one line: RFC 4180 quoting ("a,b", "" for a quote) within a
// line; unquoted fields are taken as written (then trimmed by the caller).
class CsvSplitter {
 public:
  explicit CsvSplitter(char delim) : delim_(delim) {}

  // Returns "" on success, else the problem.
  const char* split(std::string_view line, std::vector<std::string_view>* out) {
    out->clear();
    used_scratch_ = false;
    const char* p = line.data();
    const char* e = p + line.size();
    if (!std::memchr(p, '"', line.size())) {  // fast path
      while (true) {
        const char* d = static_cast<const char*>(std::memchr(p, delim_, e - p));
        if (!d) {
          out->emplace_back(p, e - p);
          return "";
        }
        out->emplace_back(p, d - p);
        p = d + 1;
      }
    }
    size_t k = 0;
    used_scratch_ = true;
    while (true) {
      const char* s = p;
      while (s < e && *s == ' ') ++s;
      if (s < e && *s == '"') {
        if (scratch_.size() <= k) scratch_.resize(k + 1);
        std::string& f = scratch_[k];
        f.clear();
        const char* j = s + 1;
        while (true) {
          const char* q = static_cast<const char*>(std::memchr(j, '"', e - j));
          if (!q) return "unterminated quoted field; close the quote on the same line (fields may not span lines)";
          f.append(j, q - j);
          if (q + 1 < e && q[1] == '"') {
            f.push_back('"');
            j = q + 2;
            continue;
          }
          p = q + 1;
          break;
        }
        while (p < e && *p == ' ') ++p;
        if (p < e && *p != delim_) return "text after a closing quote; write \"\" for a quote inside a quoted field";
        out->emplace_back(f);
      } else {
        const char* d = static_cast<const char*>(std::memchr(p, delim_, e - p));
        const char* fe = d ? d : e;
        out->emplace_back(p, fe - p);
        p = fe;
      }
      ++k;
      if (p == e) return "";
      ++p;  // the delimiter
      if (p == e) {
        out->emplace_back();
        return "";
      }
    }
  }

  // Whether the last split() returned views into its own storage (quoted
  // fields), valid only until the next split().
  bool used_scratch() const { return used_scratch_; }

 private:
  char delim_;
  bool used_scratch_ = false;
  // Unquoted fields; a deque, so growing it keeps earlier fields where
  // they are (a vector moved them, and short strings with them: the views
  // handed out dangled; found by tools/fuzz.sh).
  std::deque<std::string> scratch_;
};

std::string normalize(std::string_view name) {
  std::string out;
  for (char c : name)
    if (c != '_' && c != '-' && c != ' ' && c != '.') out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return out;
}

bool is_number(std::string_view s) {
  s = trim(s);
  if (s.empty()) return false;
  int64_t i;
  if (s.front() != '+' && std::from_chars(s.data(), s.data() + s.size(), i).ptr == s.data() + s.size()) return true;
  double d;
  auto r = std::from_chars(s.data(), s.data() + s.size(), d);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

std::string join(const std::vector<std::string_view>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += cat(i ? ", " : "", "'", v[i], "'");
  return out;
}

// A header column found by name, and a second column of the same name
// (-1: none), which makes the choice ambiguous.
struct Column {
  int index = -1;
  int twin = -1;
};

// The column named `want` (exact, then normalized), or the first candidate
// when `want` is empty; index -1 when absent.
Column find_column(const std::vector<std::string_view>& header, const std::string& want,
                   std::initializer_list<const char*> candidates) {
  auto matching = [&](auto same) {
    Column c;
    for (size_t i = 0; i < header.size(); ++i) {
      if (!same(trim(header[i]))) continue;
      if (c.index < 0)
        c.index = static_cast<int>(i);
      else if (c.twin < 0)
        c.twin = static_cast<int>(i);
    }
    return c;
  };
  if (!want.empty()) {
    Column c = matching([&](std::string_view h) { return h == want; });
    return c.index >= 0 ? c : matching([&](std::string_view h) { return normalize(h) == normalize(want); });
  }
  for (const char* name : candidates) {
    Column c = matching([&](std::string_view h) { return normalize(h) == name; });
    if (c.index >= 0) return c;
  }
  return {};
}

// pairs and seq: a line whose first non-blank character is '#' is a comment.
bool is_comment(std::string_view line) {
  line = trim(line);
  return !line.empty() && line.front() == '#';
}

// The offset of the first byte of `s` that breaks UTF-8 (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), or npos.
size_t utf8_error(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    const unsigned c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) len = 3, lo = 0xA0;
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) len = 3, hi = 0x9F;
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) len = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) len = 4, hi = 0x8F;
    else return i;
    if (i + len > n || s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (s[i + k] < 0x80 || s[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

// An id for a message: printable ASCII as is, other bytes as \xNN.
std::string escaped(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 60)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    }
  }
  return s.size() > 60 ? out + "..." : out;
}

char detect_delimiter(std::string_view header) {
  for (char c : {',', '\t', ';'})
    if (header.find(c) != std::string_view::npos) return c;
  return ',';
}

std::string printable(std::string_view s) {
  std::string out(s.substr(0, 60));
  if (s.size() > 60) out += "...";
  return out;
}


// Times as int32 offsets from the first one while they fit (unix seconds:
// a span of 68 years), else (from the first that does not) as int64.
struct Times {
  PodBuf<int32_t> narrow;
  PodBuf<int64_t> wide;
  int64_t base = 0;
  bool is_wide = false;

  size_t size() const { return is_wide ? wide.size() : narrow.size(); }
  bool empty() const { return size() == 0; }
  int64_t operator[](size_t k) const { return is_wide ? wide[k] : base + narrow[k]; }

  void push_back(int64_t t) {
    if (!is_wide) {
      if (narrow.empty()) base = t;
      int64_t d;
      if (!__builtin_sub_overflow(t, base, &d) && d >= std::numeric_limits<int32_t>::min() &&
          d <= std::numeric_limits<int32_t>::max()) {
        narrow.push_back(static_cast<int32_t>(d));
        return;
      }
      widen();
    }
    wide.push_back(t);
  }
  void widen() {
    wide.resize(narrow.size());
    for (size_t k = 0; k < narrow.size(); ++k) wide[k] = base + narrow[k];
    narrow.release();
    is_wide = true;
  }
  void release() {
    narrow.release();
    wide.release();
  }
};

// The rows read, as compact integers (indices in order of first appearance).
struct RawRows {
  PodBuf<int32_t> user;
  PodBuf<int32_t> item;
  Times time;  // empty when the input has no times
  StringIndex users;
  StringIndex items;
  bool has_time = false;
};

// Bit k set where p[k] is one of the three characters (64 bytes from p).
class ByteClasses {
 public:
  ByteClasses(char a, char b, char c)
#ifdef __SSE2__
      : a_(_mm_set1_epi8(a)), b_(_mm_set1_epi8(b)), c_(_mm_set1_epi8(c))
#else
      : a_(a), b_(b), c_(c)
#endif
  {
  }

  uint64_t mask64(const char* p) const {
#ifdef __SSE2__
    uint64_t m = 0;
    for (int k = 0; k < 4; ++k) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * k));
      const __m128i hit =
          _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, a_), _mm_cmpeq_epi8(v, b_)), _mm_cmpeq_epi8(v, c_));
      m |= static_cast<uint64_t>(static_cast<uint32_t>(_mm_movemask_epi8(hit))) << (16 * k);
    }
    return m;
#else
    uint64_t m = 0;
    for (int k = 0; k < 64; ++k) m |= static_cast<uint64_t>(p[k] == a_ || p[k] == b_ || p[k] == c_) << k;
    return m;
#endif
  }

 private:
#ifdef __SSE2__
  __m128i a_, b_, c_;
#else
  char a_, b_, c_;
#endif
};

// Walks the positions of the delimiter, '\n' and '"' in a block [b, e)
// (kPad readable bytes after e), 64 bytes per step.
class Structural {
 public:
  Structural(char delim) : classes_(delim, '\n', '"') {}

  void reset(const char* p, const char* e) {
    e_ = e;
    load(p);
  }
  // The next structural character at or after the last reset point, or e.
  const char* next() {
    while (m_ == 0) {
      if (base_ + 64 >= e_) return e_;
      load(base_ + 64);
    }
    const char* r = base_ + __builtin_ctzll(m_);
    m_ &= m_ - 1;
    return r;
  }

 private:
  void load(const char* p) {
    base_ = p;
    if (p >= e_) {
      m_ = 0;
      return;
    }
    m_ = classes_.mask64(p);
    const size_t left = e_ - p;
    if (left < 64) m_ &= (uint64_t{1} << left) - 1;
  }

  ByteClasses classes_;
  const char* base_ = nullptr;
  const char* e_ = nullptr;
  uint64_t m_ = 0;
};

// Reads the whole input into `rows` (user/item indices in first-appearance order).
class Parser {
 public:
  Parser(LineReader& reader, const ImportOptions& opt, ImportStats* st) : reader_(reader), opt_(opt), st_(st) {}

  void run(InputFormat format, RawRows* rows) {
    rows_ = rows;
    switch (format) {
      case InputFormat::Csv: read_csv(); break;
      case InputFormat::Pairs: read_tokens(false); break;
      case InputFormat::Seq: read_tokens(true); break;
      case InputFormat::Auto: SASREC_CHECK(false, "format must be resolved before parsing");
    }
    if (rows_->user.empty())
      SASREC_FAIL(Input, where(std::max<int64_t>(1, line_)), ": no data rows (", line_,
                  " lines read); the input must hold at least one interaction");
  }

 private:
  struct Pending {
    Key user, item;
    int64_t line;  // for the message about an id that is not UTF-8
  };
  static constexpr int kPending = 16;

  std::string where(int64_t line) const { return cat(reader_.path(), ":", line); }
  std::string where() const { return where(line_); }

  // Queues a row; ids are interned kPending rows later (FIFO, so in file
  // order), after the hash slots they need were prefetched. Keys may point
  // into the read buffer or the splitter's scratch: callers flush() before
  // either changes.
  void add(const Key& user, const Key& item, int64_t time) {
    rows_->users.prefetch(user.hash);
    rows_->items.prefetch(item.hash);
    if (rows_->has_time) rows_->time.push_back(time);
    if (npending_ == kPending) {
      intern(pending_[head_]);
      pending_[head_] = Pending{user, item, line_};
      head_ = (head_ + 1) % kPending;
    } else {
      pending_[(head_ + npending_) % kPending] = Pending{user, item, line_};
      ++npending_;
    }
  }

  void add_checked(std::string_view user, std::string_view item, int64_t time, bool padded) {
    if (user.empty()) SASREC_FAIL(Input, where(), ": empty user id; every row needs a user id (remove the row or fill it in)");
    if (item.empty()) SASREC_FAIL(Input, where(), ": empty item id; every row needs an item id (remove the row or fill it in)");
    if (padded)
      add(key_padded(user.data(), user.size()), key_padded(item.data(), item.size()), time);
    else
      add(key_of(user), key_of(item), time);
  }

  void intern(const Pending& p) {
    // Rows of one user often come together: skip the lookup then.
    const Key& u = p.user;
    if (!(have_last_ && u.len <= kKeyWords && u.len == last_user_.len && u.w[0] == last_user_.w[0] &&
          u.w[1] == last_user_.w[1] && u.w[2] == last_user_.w[2])) {
      const int64_t known = rows_->users.size();
      last_index_ = rows_->users.intern(u);
      if (rows_->users.size() != known) check_utf8(u, "user", p.line);
      last_user_ = u;
      have_last_ = true;
    }
    rows_->user.push_back(last_index_);
    const int64_t known = rows_->items.size();
    rows_->item.push_back(rows_->items.intern(p.item));
    if (rows_->items.size() != known) check_utf8(p.item, "item", p.line);
  }

  // A new id must be UTF-8: the store's id maps are UTF-8 strings (h5py's
  // .asstr() and every JSON output would fail on anything else). Checked
  // once per distinct id; ASCII ids of up to 24 bytes by one mask.
  void check_utf8(const Key& k, const char* what, int64_t line) const {
    if (k.len <= kKeyWords && ((k.w[0] | k.w[1] | k.w[2]) & 0x8080808080808080ull) == 0) return;
    const size_t bad = utf8_error(reinterpret_cast<const unsigned char*>(k.p), k.len);
    if (bad == std::string_view::npos) return;
    SASREC_FAIL(Input, where(line), ": the ", what, " id '", escaped(std::string_view(k.p, k.len)),
                "' is not valid UTF-8 (byte ", bad + 1, "); the store keeps ids as UTF-8 text: convert the input "
                "first, e.g. iconv -f latin1 -t utf-8 IN > IN.utf8");
  }

  void flush() {
    for (int k = 0; k < npending_; ++k) intern(pending_[(head_ + k) % kPending]);
    npending_ = 0;
    head_ = 0;
  }

  // One csv data line, any form (quotes, blanks, errors): the general path.
  void csv_line(std::string_view line) {
    if (line.empty()) return;
    if (const char* err = split_.split(line, &fields_); *err) SASREC_FAIL(Input, where(), ": ", err);
    if (fields_.size() != nf_) {
      if (fields_.size() == 1 && trim(fields_[0]).empty()) return;  // a blank line
      SASREC_FAIL(Input, where(), ": wrong field count: expected ", nf_, " (as in the header), found ", fields_.size(),
                  " split at '", delim_name(), "'; quote fields that contain the delimiter");
    }
    int64_t v = 0;
    if (tc_ >= 0) {
      std::string_view t = trim(fields_[tc_]);
      if (!parse_time(t.data(), t.data() + t.size(), &v))
        SASREC_FAIL(Input, where(), ": unparsable time '", printable(t), "' in column '", header_[tc_],
                    "'; use unix seconds, a number, or YYYY-MM-DD[ HH:MM:SS]");
    }
    const bool scratch = split_.used_scratch();
    add_checked(trim(fields_[uc_]), trim(fields_[ic_]), v, !scratch);
    if (scratch) flush();  // the views die with the next split
  }

  std::string delim_name() const { return delim_ == '\t' ? std::string("tab") : std::string(1, delim_); }

  static std::string_view trim_field(const char* b, const char* e) {
    while (b < e && is_space(*b)) ++b;
    while (e > b && is_space(e[-1])) --e;
    return std::string_view(b, e - b);
  }

  // Unix seconds as plain digits (the common case), else parse_time.
  static bool fast_time(std::string_view t, int64_t* out) {
    if (!t.empty() && t.size() <= 18) {
      uint64_t v = 0;
      size_t k = 0;
      for (; k < t.size(); ++k) {
        const unsigned d = static_cast<unsigned char>(t[k]) - '0';
        if (d > 9) break;
        v = v * 10 + d;
      }
      if (k == t.size()) {
        *out = static_cast<int64_t>(v);
        return true;
      }
    }
    return parse_time(t.data(), t.data() + t.size(), out);
  }

  // The data lines of a block [b, e). The fast path takes lines of exactly
  // nf unquoted fields, non-empty ids and a parsable time; any other line
  // (quotes, blank, wrong count, errors) goes through csv_line().
  void csv_block(const char* b, const char* e) {
    const char* fs[kMaxFastFields + 1];  // field starts; fs[k+1] - 1 = end of field k
    Structural scan(delim_);
    scan.reset(b, e);
    const char* ls = b;
    while (ls < e) {
      ++line_;
      size_t k = 0;
      const char* s = nullptr;
      bool ok = true;
      fs[0] = ls;
      while (true) {
        s = scan.next();
        const char c = s < e ? *s : '\n';
        if (c == delim_ && k + 1 < nf_) {
          fs[++k] = s + 1;
          continue;
        }
        ok = c == '\n' && k + 1 == nf_;
        fs[k + 1] = s + 1;
        break;
      }
      int64_t t = 0;
      if (ok) {
        // A CRLF line: the '\r' is not part of the last field.
        if (s > fs[nf_ - 1] && s[-1] == '\r') --fs[nf_];
        std::string_view user = trim_field(fs[uc_], fs[uc_ + 1] - 1);
        std::string_view item = trim_field(fs[ic_], fs[ic_ + 1] - 1);
        if (tc_ >= 0) ok = fast_time(trim_field(fs[tc_], fs[tc_ + 1] - 1), &t);
        if (ok && !user.empty() && !item.empty()) {
          add(key_padded(user.data(), user.size()), key_padded(item.data(), item.size()), t);
          ls = s + 1;
          continue;
        }
      }
      // The general path for this line; the scan restarts after it.
      const char* nl = s < e && *s == '\n' ? s : static_cast<const char*>(std::memchr(ls, '\n', e - ls));
      const char* le = nl ? nl : e;
      csv_line(LineReader::clean_line(ls, le - ls, line_));
      ls = le + 1;
      scan.reset(ls, e);
    }
  }

  void read_csv() {
    std::string_view line;
    while (reader_.next(&line) && trim(line).empty()) {
    }
    line_ = reader_.line_number();
    if (trim(line).empty())
      SASREC_FAIL(Input, where(std::max<int64_t>(1, line_)),
                  ": empty input (no header, no data rows); give a csv file with a header line and at least one row");
    const int64_t header_line = line_;
    delim_ = opt_.delimiter ? opt_.delimiter : detect_delimiter(line);
    split_ = CsvSplitter(delim_);
    if (const char* err = split_.split(line, &fields_); *err) SASREC_FAIL(Input, where(), ": ", err);
    header_names_.assign(fields_.begin(), fields_.end());
    header_.assign(header_names_.begin(), header_names_.end());
    nf_ = header_.size();
    auto missing = [&](const char* what, const char* flag, const std::string& want) {
      SASREC_FAIL(Input, where(header_line), ": no ", what, " column",
                  want.empty() ? std::string() : cat(" named '", want, "'"), " in the header (columns, split at '",
                  delim_name(), "': ", join(header_), "); name it with ", flag,
                  " or set the delimiter with --delimiter");
    };
    // Two columns of the chosen name: which one is meant is a guess, so not made.
    auto unique = [&](const Column& c, const char* what) {
      if (c.twin >= 0)
        SASREC_FAIL(Input, where(header_line), ": the header has two columns named '", trim(header_[c.index]),
                    "' (columns ", c.index + 1, " and ", c.twin + 1, "); which one holds the ", what,
                    " is ambiguous: rename one of them");
      return c.index;
    };
    uc_ = unique(find_column(header_, opt_.user_col,
                             {"userid", "user", "uid", "reviewerid", "customerid", "visitorid", "sessionid"}),
                 "user");
    if (uc_ < 0) missing("user", "--user-col", opt_.user_col);
    ic_ = unique(find_column(header_, opt_.item_col,
                             {"itemid", "item", "iid", "movieid", "asin", "productid", "product", "businessid",
                              "trackid", "songid", "articleid", "bookid", "isbn"}),
                 "item");
    if (ic_ < 0) missing("item", "--item-col", opt_.item_col);
    if (ic_ == uc_)
      SASREC_FAIL(Input, where(header_line), ": the user and item columns are the same column '", header_[uc_],
                  "'; name them with --user-col and --item-col");
    tc_ = unique(find_column(header_, opt_.time_col,
                             {"timestamp", "time", "unixreviewtime", "ts", "datetime", "date", "eventtime",
                              "createdat", "unixtime"}),
                 "time");
    if (tc_ < 0 && !opt_.time_col.empty()) missing("time", "--time-col", opt_.time_col);
    if (st_) {
      st_->delimiter = delim_;
      st_->user_col = header_[uc_];
      st_->item_col = header_[ic_];
      st_->time_col = tc_ >= 0 ? std::string(header_[tc_]) : std::string();
    }
    rows_->has_time = tc_ >= 0;
    const bool fast = nf_ <= kMaxFastFields && delim_ != '"' && delim_ != '\n';
    while (true) {
      flush();  // before the buffer moves
      reader_.set_line_number(line_);
      const char *b, *e;
      if (!reader_.next_block(&b, &e)) break;
      if (fast) {
        csv_block(b, e);
      } else {
        for (const char* ls = b; ls < e;) {
          const char* nl = static_cast<const char*>(std::memchr(ls, '\n', e - ls));
          const char* le = nl ? nl : e;
          ++line_;
          csv_line(LineReader::clean_line(ls, le - ls, line_));
          ls = le + 1;
        }
      }
    }
    flush();
  }

  void read_tokens(bool seq) {
    rows_->has_time = false;
    line_ = 0;
    while (true) {
      flush();  // before the buffer moves
      reader_.set_line_number(line_);
      const char *b, *e;
      if (!reader_.next_block(&b, &e)) break;
      for (const char* ls = b; ls < e;) {
        const char* nl = static_cast<const char*>(std::memchr(ls, '\n', e - ls));
        const char* le = nl ? nl : e;
        ++line_;
        split_whitespace(LineReader::clean_line(ls, le - ls, line_), &fields_);
        ls = le + 1;
        if (fields_.empty()) continue;
        if (fields_[0].front() == '#') {  // a comment line (docs/data.md)
          if (st_) ++st_->comment_lines;
          continue;
        }
        if (seq) {
          const Key user = key_padded(fields_[0].data(), fields_[0].size());
          for (size_t k = 1; k < fields_.size(); ++k) add(user, key_padded(fields_[k].data(), fields_[k].size()), 0);
        } else {
          if (fields_.size() != 2)
            SASREC_FAIL(Input, where(), ": wrong field count: expected 2 (user item), found ", fields_.size(),
                        "; use --format seq for 'user item item ...' lines or --format csv for a table");
          add(key_padded(fields_[0].data(), fields_[0].size()), key_padded(fields_[1].data(), fields_[1].size()), 0);
        }
      }
    }
    flush();
  }

  static constexpr size_t kMaxFastFields = 64;

  LineReader& reader_;
  const ImportOptions& opt_;
  ImportStats* st_;
  RawRows* rows_ = nullptr;
  int64_t line_ = 0;  // the line being read (1-based)
  // csv
  char delim_ = ',';
  CsvSplitter split_{','};
  std::vector<std::string_view> fields_;
  std::vector<std::string> header_names_;
  std::vector<std::string_view> header_;
  size_t nf_ = 0;
  int uc_ = -1, ic_ = -1, tc_ = -1;
  // batch interning
  Pending pending_[kPending];
  int npending_ = 0, head_ = 0;
  Key last_user_{};
  bool have_last_ = false;
  int32_t last_index_ = -1;
};

// ---- per-user layout ----------------------------------------------------------------------------

// The store's arrays, built from the rows; ids stay in the StringIndexes.
struct Csr {
  PodBuf<int64_t> offsets;   // [U+1]
  PodBuf<int32_t> items;     // [N], 1..I
  Times times;               // [N] or empty
  PodBuf<int32_t> user_raw;  // user u -> its StringIndex index; empty = u
  PodBuf<int32_t> item_raw;  // item i (1..I) at [i-1] -> its StringIndex index; empty = i-1
  int64_t num_users = 0, num_items = 0;

  int32_t user_index(int64_t u) const { return user_raw.empty() ? static_cast<int32_t>(u) : user_raw[u]; }
  int32_t item_index(int64_t i) const { return item_raw.empty() ? static_cast<int32_t>(i - 1) : item_raw[i - 1]; }
};

// Stable sort by time within each user's segment, only where out of order.
template <typename T>
void sort_by_time(const PodBuf<int64_t>& offsets, int64_t num_users, PodBuf<int32_t>* items, PodBuf<T>* times) {
  std::vector<std::pair<T, int32_t>> tmp;
  for (int64_t u = 0; u < num_users; ++u) {
    const int64_t b = offsets[u], n = offsets[u + 1] - b;
    T* t = times->data() + b;
    int32_t* it = items->data() + b;
    int64_t j = 1;
    while (j < n && t[j - 1] <= t[j]) ++j;
    if (j >= n) continue;
    if (n <= 64) {  // insertion sort, in place
      for (; j < n; ++j) {
        const T tv = t[j];
        const int32_t iv = it[j];
        int64_t k = j;
        for (; k > 0 && t[k - 1] > tv; --k) {
          t[k] = t[k - 1];
          it[k] = it[k - 1];
        }
        t[k] = tv;
        it[k] = iv;
      }
      continue;
    }
    tmp.clear();
    for (int64_t k = 0; k < n; ++k) tmp.emplace_back(t[k], it[k]);
    std::stable_sort(tmp.begin(), tmp.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    for (int64_t k = 0; k < n; ++k) {
      t[k] = tmp[k].first;
      it[k] = tmp[k].second;
    }
  }
}

// out[pos[user[r]]++] = in[r] over the kept rows.
template <typename T>
void scatter(const PodBuf<int64_t>& offsets, int64_t num_users, const PodBuf<int32_t>& user,
             const PodBuf<uint8_t>& kept, const T* in, PodBuf<T>* out) {
  PodBuf<int64_t> pos(num_users);
  std::memcpy(pos.data(), offsets.data(), num_users * sizeof(int64_t));
  out->resize(offsets[num_users]);
  const int64_t R = static_cast<int64_t>(user.size());
  const int32_t* ru = user.data();
  T* o = out->data();
  for (int64_t r = 0; r < R; ++r) {
    if (!kept.empty() && !kept[r]) continue;
    o[pos[ru[r]]++] = in[r];
  }
}

// k-core filter, dense numbering in order of first appearance among the kept
// rows, and the CSR by counting: O(rows), no global sort. Frees the rows
// (not the ids).
Csr build_csr(const std::string& path, const ImportOptions& opt, RawRows* rows, ImportStats* st) {
  const int64_t R = static_cast<int64_t>(rows->user.size());
  const int64_t nu_raw = rows->users.size(), ni_raw = rows->items.size();
  const bool has_time = rows->has_time;
  Csr c;
  rows->users.drop_table();  // parsing is over: give the pages to the arrays below
  rows->items.drop_table();

  PodBuf<uint8_t> kept;  // empty = all rows kept
  if (opt.min_user_interactions > 1 || opt.min_item_interactions > 1) {
    kept.resize(R);
    std::fill(kept.begin(), kept.end(), 1);
    std::vector<int64_t> ucount(nu_raw, 0), icount(ni_raw, 0);
    for (int64_t r = 0; r < R; ++r) {
      ++ucount[rows->user[r]];
      ++icount[rows->item[r]];
    }
    bool changed = true;
    while (changed) {
      changed = false;
      for (int64_t r = 0; r < R; ++r) {
        if (!kept[r]) continue;
        const int32_t u = rows->user[r], i = rows->item[r];
        if (ucount[u] < opt.min_user_interactions || icount[i] < opt.min_item_interactions) {
          kept[r] = 0;
          --ucount[u];
          --icount[i];
          ++st->dropped_rows;
          changed = true;
        }
      }
    }
    if (st->dropped_rows == R)
      SASREC_FAIL(Input, path, ": all ", R, " rows were dropped by --min-user-interactions ",
                  opt.min_user_interactions, " / --min-item-interactions ", opt.min_item_interactions,
                  "; lower the thresholds");
  }

  if (kept.empty()) {
    // The indices from parsing are already in order of first appearance.
    c.num_users = nu_raw;
    c.num_items = ni_raw;
  } else {
    // Renumber among the kept rows; rows get the new indices in place.
    PodBuf<int32_t> user_new(nu_raw), item_new(ni_raw);
    std::fill(user_new.begin(), user_new.end(), -1);
    std::fill(item_new.begin(), item_new.end(), -1);
    for (int64_t r = 0; r < R; ++r) {
      if (!kept[r]) continue;
      int32_t& u = user_new[rows->user[r]];
      if (u < 0) {
        u = static_cast<int32_t>(c.user_raw.size());
        c.user_raw.push_back(rows->user[r]);
      }
      int32_t& i = item_new[rows->item[r]];
      if (i < 0) {
        i = static_cast<int32_t>(c.item_raw.size());
        c.item_raw.push_back(rows->item[r]);
      }
      rows->user[r] = u;
      rows->item[r] = i;
    }
    c.num_users = static_cast<int64_t>(c.user_raw.size());
    c.num_items = static_cast<int64_t>(c.item_raw.size());
  }

  // Count per user; note whether each user's rows are already contiguous.
  const int64_t U = c.num_users;
  c.offsets.resize(U + 1);
  std::fill(c.offsets.begin(), c.offsets.end(), 0);
  bool grouped = true;
  {
    int32_t prev = 0;
    for (int64_t r = 0; r < R; ++r) {
      if (!kept.empty() && !kept[r]) continue;
      const int32_t u = rows->user[r];
      ++c.offsets[u + 1];
      grouped = grouped && u >= prev;
      prev = u;
    }
  }
  for (int64_t u = 0; u < U; ++u) c.offsets[u + 1] += c.offsets[u];

  if (grouped && kept.empty()) {
    // Rows grouped by user (a user-sorted log, seq files): already the CSR.
    for (int64_t r = 0; r < R; ++r) ++rows->item[r];
    c.items = std::move(rows->item);
    c.times = std::move(rows->time);
  } else {
    // Scatter each row to its user's next slot (stable: file order per user):
    // the items, then (into the pages the row items gave back) the times.
    for (int64_t r = 0; r < R; ++r) ++rows->item[r];
    scatter(c.offsets, U, rows->user, kept, rows->item.data(), &c.items);
    rows->item.release();
    if (has_time) {
      c.times.base = rows->time.base;
      c.times.is_wide = rows->time.is_wide;
      if (c.times.is_wide)
        scatter(c.offsets, U, rows->user, kept, rows->time.wide.data(), &c.times.wide);
      else
        scatter(c.offsets, U, rows->user, kept, rows->time.narrow.data(), &c.times.narrow);
    }
  }
  rows->user.release();
  rows->item.release();
  rows->time.release();
  if (has_time) {
    if (c.times.is_wide)
      sort_by_time(c.offsets, U, &c.items, &c.times.wide);
    else
      sort_by_time(c.offsets, U, &c.items, &c.times.narrow);
  }
  return c;
}

// Streams the CSR and the ids through StoreWriter; returns the temporaries
// of killed writers it removed.
int write_csr(const std::string& output, const Csr& c, const RawRows& rows, const std::vector<RunInput>& inputs) {
  const bool has_time = !c.times.empty();
  StoreWriter w(output, has_time, inputs);
  std::vector<int64_t> t;
  for (int64_t u = 0; u < c.num_users; ++u) {
    const int64_t b = c.offsets[u], n = c.offsets[u + 1] - b;
    const int64_t* times = nullptr;
    if (has_time && c.times.is_wide) {
      times = c.times.wide.data() + b;
    } else if (has_time) {
      t.resize(n);
      for (int64_t k = 0; k < n; ++k) t[k] = c.times.base + c.times.narrow[b + k];
      times = t.data();
    }
    w.add_user(rows.users.key(c.user_index(u)), c.items.data() + b, times, n);
  }
  w.finish(c.num_items, [&](int64_t i) { return std::string(rows.items.key(c.item_index(i))); });
  return w.stale_temporaries_removed();
}

// The format of an input under --format auto (rule: docs/data.md) from its
// first lines `prefix`: whole lines, the last one too when `complete` (the
// input ends there). `path` names the input in messages.
InputFormat detect_in(std::string_view prefix, bool complete, const std::string& path, char delimiter) {
  size_t pos = 0;
  int64_t line_number = 0;
  auto next_line = [&](std::string_view* line) {
    if (pos >= prefix.size()) return false;
    const char* b = prefix.data() + pos;
    const char* nl = static_cast<const char*>(std::memchr(b, '\n', prefix.size() - pos));
    if (!nl && !complete) return false;  // a line cut by the end of the prefix
    const size_t n = nl ? static_cast<size_t>(nl - b) : prefix.size() - pos;
    pos += n + 1;
    *line = LineReader::clean_line(b, n, ++line_number);
    return true;
  };
  std::string_view line;
  std::vector<std::string_view> f;
  int64_t first_line = 0;
  int sampled = 0;
  bool all_two = true, any_more = false;
  size_t tab_count = 0;
  bool same_count = true, has_tab = false;
  while (sampled < 100 && next_line(&line)) {
    if (trim(line).empty() || is_comment(line)) continue;
    if (sampled == 0) {
      first_line = line_number;
      char d = delimiter ? delimiter : 0;
      if (!d)
        for (char c : {',', '\t', ';'})
          if (line.find(c) != std::string_view::npos) {
            d = c;
            break;
          }
      if (d) {
        CsvSplitter split(d);
        split.split(line, &f);
        bool header = f.size() >= 2 && std::any_of(f.begin(), f.end(), [](std::string_view s) { return !is_number(s); });
        if (header) return InputFormat::Csv;
        if (d != '\t' && d != ' ')
          SASREC_FAIL(Input, path, ":", first_line, ": cannot tell the format: the line is split by '", d,
                      "' but has no header; add a header line (e.g. user_id,item_id,timestamp) or pass --format");
      }
    }
    split_whitespace(line, &f);
    has_tab = has_tab || line.find('\t') != std::string_view::npos;
    if (sampled == 0) tab_count = f.size();
    same_count = same_count && f.size() == tab_count;
    all_two = all_two && f.size() == 2;
    any_more = any_more || f.size() > 2;
    ++sampled;
  }
  if (sampled == 0)
    SASREC_FAIL(Input, path, ":", std::max<int64_t>(1, line_number),
                ": empty input (no data rows); give a file with at least one interaction");
  if (all_two) return InputFormat::Pairs;
  if (has_tab && same_count && sampled >= 2 && tab_count >= 3)
    SASREC_FAIL(Input, path, ":", first_line, ": cannot tell the format: every line has ", tab_count,
                " tab-separated numbers, like a table without a header; add a header line or pass --format seq");
  if (any_more) return InputFormat::Seq;
  SASREC_FAIL(Input, path, ":", first_line,
              ": cannot tell the format: lines hold a single token; give 'user item' pairs, 'user item item ...' "
              "sequences or a csv with a header, or pass --format");
}

// Enough of the input's start for detect_in: its first 100 non-empty lines
// in all but odd inputs (thousands of blank lines).
constexpr size_t kPeekLines = 4096;
constexpr size_t kPeekBytes = size_t{64} << 20;

InputFormat detect_format_of(LineReader& reader, char delimiter) {
  const std::string_view prefix = reader.peek(kPeekLines, kPeekBytes);
  return detect_in(prefix, reader.at_eof_after_peek(), reader.path(), delimiter);
}

// Reads the input of `reader` (once, from where it stands) and builds the
// CSR (the work of import_interactions).
Csr import_csr(LineReader& reader, const ImportOptions& opt, ImportStats* st, RawRows* rows) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  InputFormat format = opt.format == InputFormat::Auto ? detect_format_of(reader, opt.delimiter) : opt.format;
  st->format = format;
  {
    Parser parser(reader, opt, st);
    parser.run(format, rows);
  }
  st->bytes = reader.consumed();
  st->rows = static_cast<int64_t>(rows->user.size());
  const auto t1 = Clock::now();
  st->read_seconds = std::chrono::duration<double>(t1 - t0).count();
  Csr c = build_csr(reader.path(), opt, rows, st);
  st->sort_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  st->users = c.num_users;
  st->items = c.num_items;
  st->interactions = c.offsets[c.num_users];
  return c;
}

}  // namespace

InputFormat detect_format(const std::string& path, char delimiter) {
  LineReader reader(path, 1 << 16);
  return detect_format_of(reader, delimiter);
}

Interactions import_interactions(const std::string& path, const ImportOptions& opt, ImportStats* stats) {
  ImportStats local;
  ImportStats* st = stats ? stats : &local;
  RawRows rows;
  LineReader reader(path, opt.buffer_bytes);
  Csr c = import_csr(reader, opt, st, &rows);
  Interactions d;
  d.offsets.assign(c.offsets.begin(), c.offsets.end());
  d.items.assign(c.items.begin(), c.items.end());
  d.timestamps.resize(c.times.size());
  for (size_t k = 0; k < c.times.size(); ++k) d.timestamps[k] = c.times[k];
  d.user_ids.reserve(c.num_users);
  for (int64_t u = 0; u < c.num_users; ++u) d.user_ids.emplace_back(rows.users.key(c.user_index(u)));
  d.item_ids.reserve(c.num_items + 1);
  for (int64_t i = 1; i <= c.num_items; ++i) d.item_ids.emplace_back(rows.items.key(c.item_index(i)));
  return d;
}

ImportStats convert_to_store(const std::string& input, const std::string& output, const ImportOptions& opt) {
  namespace fs = std::filesystem;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  // The output is checked before the input is read (a FIFO would wait for
  // its writer first), then again against the opened input itself: "-" or
  // /dev/stdin may be the very file named as the output.
  std::vector<RunInput> inputs;
  if (input != "-") inputs.push_back(run_input("the input", input));
  check_output(output, "the output", inputs);
  LineReader reader(input, opt.buffer_bytes);
  inputs.push_back(RunInput{"the input", reader.path(), file_id_of_fd(reader.fd())});
  check_output(output, "the output", inputs);
  ImportStats st;
  RawRows rows;
  Csr c = import_csr(reader, opt, &st, &rows);
  const auto t1 = Clock::now();
  st.stale_temporaries_removed = write_csr(output, c, rows, inputs);
  const auto t2 = Clock::now();
  st.write_seconds = std::chrono::duration<double>(t2 - t1).count();
  st.seconds = std::chrono::duration<double>(t2 - t0).count();
  return st;
}

}  // namespace sasrec
