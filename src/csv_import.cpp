// csv_import.cpp: the text readers of csv2h5 (csv, pairs, seq), format and
// column detection, time parsing, the k-core filter and the mapping of raw
// ids to dense indices; see csv_import.h for the contract.
//
// The hot loop reads a large buffer with read(2), finds lines with memchr and
// splits fields into string_views into that buffer (no allocation per row);
// ids are interned in an open-addressing StringIndex that stores each
// distinct id once in an arena. Rows are kept as int32 user, int32 item and
// (when there is a time column) int64 time: 8 or 16 bytes per row.
#include "sasrec/csv_import.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <memory>
#include <string_view>
#include <vector>

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
  if (mo < 1 || mo > 12 || d < 1 || d > 31) return false;
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
      if (r == end && v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        *out = neg ? -static_cast<int64_t>(v) : static_cast<int64_t>(v);
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

// ---- string interning -------------------------------------------------------------------

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0x9FB21C651E98DF25ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  if (n) {
    uint64_t v = 0;
    std::memcpy(&v, p, n);
    h = (h ^ v) * 0x9FB21C651E98DF25ull;
    h ^= h >> 29;
  }
  h ^= h >> 32;
  h *= 0xD6E8FEB86659FD93ull;
  h ^= h >> 32;
  return h;
}

// Distinct strings -> 0..n-1 in order of first insertion; each string is
// stored once in an arena. Open addressing with linear probing (load <= 1/2)
// over 32-byte slots that hold the hash tag, the length and the first 23
// bytes of the key, so a lookup of a typical id touches one cache line; the
// caller prefetches that line (prefetch()) a few rows ahead.
class StringIndex {
 public:
  static constexpr size_t kInline = 23;

  StringIndex() { allocate(1024); }

  static uint64_t hash(std::string_view s) { return hash_bytes(s.data(), s.size()); }
  void prefetch(uint64_t h) const { __builtin_prefetch(&slots_[h & mask_]); }

  int32_t intern(std::string_view s) { return intern(s, hash(s)); }

  int32_t intern(std::string_view s, uint64_t h) {
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    const uint8_t len = static_cast<uint8_t>(std::min<size_t>(s.size(), 255));
    const size_t head = std::min(s.size(), kInline);
    uint64_t i = h & mask_;
    while (true) {
      const Slot& slot = slots_[i];
      if (slot.index1 == 0) break;
      if (slot.tag == tag && slot.len == len && std::memcmp(slot.key, s.data(), head) == 0 &&
          (s.size() <= kInline || key(static_cast<int32_t>(slot.index1 - 1)) == s))
        return static_cast<int32_t>(slot.index1 - 1);
      i = (i + 1) & mask_;
    }
    if (size() >= std::numeric_limits<int32_t>::max() - 1)
      SASREC_FAIL(Input, "more than 2^31 - 2 distinct ids; split the input");
    const int32_t k = static_cast<int32_t>(size());
    arena_.insert(arena_.end(), s.begin(), s.end());
    starts_.push_back(arena_.size());
    fill(&slots_[i], s, h, k);
    if (static_cast<uint64_t>(size()) * 2 > mask_) grow();
    return k;
  }

  int64_t size() const { return static_cast<int64_t>(starts_.size()) - 1; }
  std::string_view key(int32_t k) const {
    return std::string_view(arena_.data() + starts_[k], starts_[k + 1] - starts_[k]);
  }

 private:
  struct alignas(32) Slot {
    uint32_t index1 = 0;  // index + 1; 0 = empty
    uint32_t tag = 0;     // hash >> 32
    uint8_t len = 0;      // min(length, 255)
    char key[kInline] = {};
  };
  static_assert(sizeof(Slot) == 32);

  static void fill(Slot* slot, std::string_view s, uint64_t h, int32_t k) {
    slot->index1 = static_cast<uint32_t>(k) + 1;
    slot->tag = static_cast<uint32_t>(h >> 32);
    slot->len = static_cast<uint8_t>(std::min<size_t>(s.size(), 255));
    std::memcpy(slot->key, s.data(), std::min(s.size(), kInline));
  }

  // Zeroed slots; big tables ask for transparent huge pages, since every
  // lookup lands on a random slot and 4 KiB pages would miss the TLB.
  void allocate(size_t n) {
    const size_t bytes = n * sizeof(Slot);
    const size_t align = bytes >= (2u << 20) ? (2u << 20) : alignof(Slot);
    void* p = nullptr;
    if (posix_memalign(&p, align, bytes) != 0) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    if (align > alignof(Slot)) madvise(p, bytes, MADV_HUGEPAGE);
#endif
    std::memset(p, 0, bytes);
    slots_.reset(static_cast<Slot*>(p));
    mask_ = n - 1;
  }

  void grow() {
    allocate((mask_ + 1) * 2);
    for (int32_t k = 0; k < size(); ++k) {
      const std::string_view s = key(k);
      const uint64_t h = hash(s);
      uint64_t i = h & mask_;
      while (slots_[i].index1 != 0) i = (i + 1) & mask_;
      fill(&slots_[i], s, h, k);
    }
  }

  std::vector<char> arena_;
  std::vector<uint64_t> starts_{0};
  struct FreeSlots {
    void operator()(Slot* p) const { std::free(p); }
  };
  std::unique_ptr<Slot[], FreeSlots> slots_;
  uint64_t mask_ = 0;
};

// ---- line reading ---------------------------------------------------------------------------

// Yields the lines of a file (without "\n" or "\r\n") from a fixed buffer
// refilled with read(2). Views stay valid until the next call to next().
class LineReader {
 public:
  LineReader(const std::string& path, size_t buffer_bytes) : path_(path), buf_(std::max<size_t>(buffer_bytes, 4096)) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0)
      SASREC_FAIL(Input, path, ": no such file (", std::strerror(errno), "); check the input path");
    if (S_ISDIR(st.st_mode)) SASREC_FAIL(Input, path, ": is a directory; give the input file");
    fd_ = ::open(path.c_str(), O_RDONLY);
    if (fd_ < 0) SASREC_FAIL(Input, path, ": cannot open (", std::strerror(errno), "); check its permissions");
    size_ = st.st_size;
#ifdef POSIX_FADV_SEQUENTIAL
    posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
  }
  ~LineReader() {
    if (fd_ >= 0) ::close(fd_);
  }
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  bool next(std::string_view* line) {
    while (true) {
      const char* b = buf_.data() + begin_;
      const char* nl = nl_ ? nl_ : static_cast<const char*>(std::memchr(b, '\n', end_ - begin_));
      nl_ = nullptr;
      if (nl) {
        size_t n = nl - b;
        begin_ += n + 1;
        consumed_ += n + 1;
        return emit(b, n, line);
      }
      if (eof_) {
        if (begin_ == end_) return false;
        size_t n = end_ - begin_;
        begin_ = end_;
        consumed_ += n;
        return emit(b, n, line);
      }
      refill();
    }
  }

  // True when next() will not refill the buffer, so views of earlier lines stay valid.
  bool line_buffered() {
    if (!nl_) nl_ = static_cast<const char*>(std::memchr(buf_.data() + begin_, '\n', end_ - begin_));
    return nl_ != nullptr || eof_;
  }

  int64_t line_number() const { return line_; }
  int64_t consumed() const { return consumed_; }
  int64_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  bool emit(const char* b, size_t n, std::string_view* line) {
    ++line_;
    if (line_ == 1 && n >= 3 && std::memcmp(b, "\xEF\xBB\xBF", 3) == 0) {  // UTF-8 byte order mark
      b += 3;
      n -= 3;
    }
    if (n && b[n - 1] == '\r') --n;
    *line = std::string_view(b, n);
    return true;
  }

  void refill() {
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    if (end_ == buf_.size()) buf_.resize(buf_.size() * 2);  // a line longer than the buffer
    size_t got = 0;
    while (end_ < buf_.size()) {
      ssize_t r = ::read(fd_, buf_.data() + end_, buf_.size() - end_);
      if (r < 0) {
        if (errno == EINTR) continue;
        SASREC_FAIL(Io, path_, ":", line_ + 1, ": read failed (", std::strerror(errno), "); check the disk");
      }
      if (r == 0) {
        eof_ = true;
        break;
      }
      if (const void* z = std::memchr(buf_.data() + end_, 0, r)) {
        const char* zp = static_cast<const char*>(z);
        int64_t line = line_ + 1 + std::count(static_cast<const char*>(buf_.data() + begin_), zp, '\n');
        SASREC_FAIL(Input, path_, ":", line,
                    ": binary data (a NUL byte); the input must be a text file (csv, pairs or seq), "
                    "decompress it first if it is compressed");
      }
      end_ += r;
      got += r;
      if (got >= (1u << 20)) break;
    }
  }

  std::string path_;
  std::vector<char> buf_;
  int fd_ = -1;
  size_t begin_ = 0, end_ = 0;
  const char* nl_ = nullptr;  // the next newline, when already found
  bool eof_ = false;
  int64_t line_ = 0;
  int64_t consumed_ = 0;
  int64_t size_ = 0;
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
  std::vector<std::string> scratch_;
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

// Index of the column named `want` (exact, then normalized), or of the first
// candidate when `want` is empty; -1 when absent.
int find_column(const std::vector<std::string_view>& header, const std::string& want,
                std::initializer_list<const char*> candidates) {
  if (!want.empty()) {
    for (size_t i = 0; i < header.size(); ++i)
      if (trim(header[i]) == want) return static_cast<int>(i);
    for (size_t i = 0; i < header.size(); ++i)
      if (normalize(trim(header[i])) == normalize(want)) return static_cast<int>(i);
    return -1;
  }
  for (const char* c : candidates)
    for (size_t i = 0; i < header.size(); ++i)
      if (normalize(trim(header[i])) == c) return static_cast<int>(i);
  return -1;
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

// The rows read, as compact integers.
struct RawRows {
  std::vector<int32_t> user;
  std::vector<int32_t> item;
  std::vector<int64_t> time;  // empty when the input has no times
  StringIndex users;
  StringIndex items;
  bool has_time = false;

  void reserve(size_t n) {
    user.reserve(n);
    item.reserve(n);
    if (has_time) time.reserve(n);
  }
};

// Reads the whole input into `rows` (user/item indices in first-appearance order).
class Parser {
 public:
  Parser(const std::string& path, const ImportOptions& opt, ImportStats* st)
      : reader_(path, opt.buffer_bytes), opt_(opt), st_(st) {}

  void run(InputFormat format, RawRows* rows) {
    rows_ = rows;
    switch (format) {
      case InputFormat::Csv: read_csv(); break;
      case InputFormat::Pairs: read_tokens(false); break;
      case InputFormat::Seq: read_tokens(true); break;
      case InputFormat::Auto: SASREC_CHECK(false, "format must be resolved before parsing");
    }
    if (rows_->user.empty())
      SASREC_FAIL(Input, where(std::max<int64_t>(1, reader_.line_number())),
                  ": no data rows (", reader_.line_number(),
                  " lines read); the input must hold at least one interaction");
  }

 private:
  std::string where(int64_t line) const { return cat(reader_.path(), ":", line); }
  std::string where() const { return where(reader_.line_number()); }

  void maybe_reserve() {
    // Once, early: reserve for the whole file from the bytes per row so far.
    if (reserved_ || rows_->user.size() < 200000) return;
    reserved_ = true;
    double per_byte = static_cast<double>(rows_->user.size()) / std::max<int64_t>(1, reader_.consumed());
    rows_->reserve(static_cast<size_t>(per_byte * reader_.size() * 1.02) + 1024);
  }

  int32_t intern_user(std::string_view id, uint64_t h) {
    if (have_last_user_ && id == std::string_view(last_user_)) return last_user_index_;
    last_user_.assign(id.data(), id.size());
    have_last_user_ = true;
    last_user_index_ = rows_->users.intern(id, h);
    return last_user_index_;
  }

  // Queues a row; ids are interned in batches (flush()) so that the hash
  // slots of the next rows are prefetched while earlier rows are looked up.
  // The views must stay valid until flush(): callers flush before the reader
  // refills its buffer and right away for views into splitter scratch.
  void add(std::string_view user, std::string_view item, const int64_t* time) {
    if (user.empty()) SASREC_FAIL(Input, where(), ": empty user id; every row needs a user id (remove the row or fill it in)");
    if (item.empty()) SASREC_FAIL(Input, where(), ": empty item id; every row needs an item id (remove the row or fill it in)");
    Pending& p = pending_[npending_++];
    p.user = user;
    p.item = item;
    p.user_hash = StringIndex::hash(user);
    p.item_hash = StringIndex::hash(item);
    rows_->users.prefetch(p.user_hash);
    rows_->items.prefetch(p.item_hash);
    if (time) rows_->time.push_back(*time);
    if (npending_ == kPending) flush();
  }

  void flush() {
    for (int k = 0; k < npending_; ++k) {
      const Pending& p = pending_[k];
      rows_->user.push_back(intern_user(p.user, p.user_hash));
      rows_->item.push_back(rows_->items.intern(p.item, p.item_hash));
    }
    npending_ = 0;
  }

  // Before reading the next line: flush when that read may move the buffer.
  void flush_if_refill() {
    if (npending_ && !reader_.line_buffered()) flush();
  }

  void read_csv() {
    std::string_view line;
    std::vector<std::string_view> f;
    while (reader_.next(&line) && trim(line).empty()) {
    }
    if (trim(line).empty())
      SASREC_FAIL(Input, where(std::max<int64_t>(1, reader_.line_number())),
                  ": empty input (no header, no data rows); give a csv file with a header line and at least one row");
    const int64_t header_line = reader_.line_number();
    char delim = opt_.delimiter ? opt_.delimiter : detect_delimiter(line);
    CsvSplitter split(delim);
    if (const char* err = split.split(line, &f); *err) SASREC_FAIL(Input, where(), ": ", err);
    std::vector<std::string> header_names(f.begin(), f.end());
    std::vector<std::string_view> header(header_names.begin(), header_names.end());
    const size_t nf = header.size();
    auto delim_name = [&] { return delim == '\t' ? std::string("tab") : std::string(1, delim); };
    auto missing = [&](const char* what, const char* flag, const std::string& want) {
      SASREC_FAIL(Input, where(header_line), ": no ", what, " column",
                  want.empty() ? std::string() : cat(" named '", want, "'"), " in the header (columns, split at '",
                  delim_name(), "': ", join(header), "); name it with ", flag,
                  " or set the delimiter with --delimiter");
    };
    const int uc = find_column(header, opt_.user_col,
                               {"userid", "user", "uid", "reviewerid", "customerid", "visitorid", "sessionid"});
    if (uc < 0) missing("user", "--user-col", opt_.user_col);
    const int ic = find_column(header, opt_.item_col,
                               {"itemid", "item", "iid", "movieid", "asin", "productid", "product", "businessid",
                                "trackid", "songid", "articleid", "bookid", "isbn"});
    if (ic < 0) missing("item", "--item-col", opt_.item_col);
    if (ic == uc) SASREC_FAIL(Input, where(header_line), ": the user and item columns are the same column '", header[uc], "'; name them with --user-col and --item-col");
    const int tc = find_column(header, opt_.time_col,
                               {"timestamp", "time", "unixreviewtime", "ts", "datetime", "date", "eventtime",
                                "createdat", "unixtime"});
    if (tc < 0 && !opt_.time_col.empty()) missing("time", "--time-col", opt_.time_col);
    if (st_) {
      st_->delimiter = delim;
      st_->user_col = header[uc];
      st_->item_col = header[ic];
      st_->time_col = tc >= 0 ? std::string(header[tc]) : std::string();
    }
    rows_->has_time = tc >= 0;
    while (true) {
      flush_if_refill();
      if (!reader_.next(&line)) break;
      if (line.empty()) continue;
      if (const char* err = split.split(line, &f); *err) SASREC_FAIL(Input, where(), ": ", err);
      if (f.size() != nf) {
        if (f.size() == 1 && trim(f[0]).empty()) continue;  // a blank line
        SASREC_FAIL(Input, where(), ": wrong field count: expected ", nf, " (as in the header), found ", f.size(),
                    " split at '", delim_name(), "'; quote fields that contain the delimiter");
      }
      if (tc >= 0) {
        std::string_view t = trim(f[tc]);
        int64_t v;
        if (!parse_time(t.data(), t.data() + t.size(), &v))
          SASREC_FAIL(Input, where(), ": unparsable time '", printable(t), "' in column '", header[tc],
                      "'; use unix seconds, a number, or YYYY-MM-DD[ HH:MM:SS]");
        add(trim(f[uc]), trim(f[ic]), &v);
      } else {
        add(trim(f[uc]), trim(f[ic]), nullptr);
      }
      if (split.used_scratch()) flush();
      maybe_reserve();
    }
    flush();
  }

  void read_tokens(bool seq) {
    std::string_view line;
    std::vector<std::string_view> f;
    rows_->has_time = false;
    while (true) {
      flush_if_refill();
      if (!reader_.next(&line)) break;
      split_whitespace(line, &f);
      if (f.empty()) continue;
      if (seq) {
        for (size_t k = 1; k < f.size(); ++k) add(f[0], f[k], nullptr);
      } else {
        if (f.size() != 2)
          SASREC_FAIL(Input, where(), ": wrong field count: expected 2 (user item), found ", f.size(),
                      "; use --format seq for 'user item item ...' lines or --format csv for a table");
        add(f[0], f[1], nullptr);
      }
      maybe_reserve();
    }
    flush();
  }

  LineReader reader_;
  const ImportOptions& opt_;
  ImportStats* st_;
  RawRows* rows_ = nullptr;
  bool reserved_ = false;
  struct Pending {
    std::string_view user, item;
    uint64_t user_hash, item_hash;
  };
  static constexpr int kPending = 16;
  Pending pending_[kPending];
  int npending_ = 0;
  std::string last_user_;
  bool have_last_user_ = false;
  int32_t last_user_index_ = -1;
};

// Stable sort of (time, item) within each user's segment.
void sort_by_time(const std::vector<int64_t>& offsets, std::vector<int32_t>* items, std::vector<int64_t>* times) {
  std::vector<std::pair<int64_t, int32_t>> tmp;
  const size_t U = offsets.size() - 1;
  for (size_t u = 0; u < U; ++u) {
    const int64_t b = offsets[u], e = offsets[u + 1];
    if (std::is_sorted(times->begin() + b, times->begin() + e)) continue;
    tmp.clear();
    for (int64_t j = b; j < e; ++j) tmp.emplace_back((*times)[j], (*items)[j]);
    std::stable_sort(tmp.begin(), tmp.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    for (int64_t j = b; j < e; ++j) {
      (*times)[j] = tmp[j - b].first;
      (*items)[j] = tmp[j - b].second;
    }
  }
}

}  // namespace

InputFormat detect_format(const std::string& path, char delimiter) {
  LineReader reader(path, 1 << 16);
  std::string_view line;
  std::vector<std::string_view> f;
  int64_t first_line = 0;
  int sampled = 0;
  bool all_two = true, any_more = false;
  size_t tab_count = 0;
  bool same_count = true, has_tab = false;
  while (sampled < 100 && reader.next(&line)) {
    if (trim(line).empty()) continue;
    if (sampled == 0) {
      first_line = reader.line_number();
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
    SASREC_FAIL(Input, path, ":", std::max<int64_t>(1, reader.line_number()),
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

Interactions import_interactions(const std::string& path, const ImportOptions& opt, ImportStats* stats) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  ImportStats local;
  ImportStats* st = stats ? stats : &local;
  InputFormat format = opt.format == InputFormat::Auto ? detect_format(path, opt.delimiter) : opt.format;
  st->format = format;

  RawRows rows;
  {
    Parser parser(path, opt, st);
    parser.run(format, &rows);
  }
  {
    struct stat s;
    st->bytes = stat(path.c_str(), &s) == 0 ? s.st_size : 0;
  }
  const int64_t R = static_cast<int64_t>(rows.user.size());
  st->rows = R;
  st->read_seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  // k-core: drop rows of users/items below the thresholds until stable.
  std::vector<uint8_t> kept;
  const int64_t nu_raw = rows.users.size(), ni_raw = rows.items.size();
  if (opt.min_user_interactions > 1 || opt.min_item_interactions > 1) {
    kept.assign(R, 1);
    std::vector<int64_t> ucount(nu_raw, 0), icount(ni_raw, 0);
    for (int64_t r = 0; r < R; ++r) {
      ++ucount[rows.user[r]];
      ++icount[rows.item[r]];
    }
    bool changed = true;
    while (changed) {
      changed = false;
      for (int64_t r = 0; r < R; ++r) {
        if (!kept[r]) continue;
        const int32_t u = rows.user[r], i = rows.item[r];
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

  // Dense indices in order of first appearance among kept rows.
  std::vector<int32_t> user_new(nu_raw, -1), item_new(ni_raw, 0);
  Interactions d;
  std::vector<int64_t> count;
  int32_t next_item = 1;
  for (int64_t r = 0; r < R; ++r) {
    if (!kept.empty() && !kept[r]) continue;
    int32_t& u = user_new[rows.user[r]];
    if (u < 0) {
      u = static_cast<int32_t>(d.user_ids.size());
      d.user_ids.emplace_back(rows.users.key(rows.user[r]));
      count.push_back(0);
    }
    ++count[u];
    int32_t& i = item_new[rows.item[r]];
    if (i == 0) {
      i = next_item++;
      d.item_ids.emplace_back(rows.items.key(rows.item[r]));
    }
  }
  const int64_t U = static_cast<int64_t>(d.user_ids.size());
  d.offsets.assign(U + 1, 0);
  for (int64_t u = 0; u < U; ++u) d.offsets[u + 1] = d.offsets[u] + count[u];
  const int64_t N = d.offsets[U];
  std::vector<int64_t>& pos = count;  // reuse as write cursors
  std::copy(d.offsets.begin(), d.offsets.end() - 1, pos.begin());
  d.items.resize(N);
  if (rows.has_time) d.timestamps.resize(N);
  for (int64_t r = 0; r < R; ++r) {
    if (!kept.empty() && !kept[r]) continue;
    const int64_t p = pos[user_new[rows.user[r]]]++;
    d.items[p] = item_new[rows.item[r]];
    if (rows.has_time) d.timestamps[p] = rows.time[r];
  }
  rows = RawRows();
  if (!d.timestamps.empty()) sort_by_time(d.offsets, &d.items, &d.timestamps);

  st->users = U;
  st->items = d.num_items();
  st->interactions = N;
  return d;
}

ImportStats convert_to_store(const std::string& input, const std::string& output, const ImportOptions& opt) {
  namespace fs = std::filesystem;
  const auto t0 = std::chrono::steady_clock::now();
  {
    fs::path out(output);
    fs::path dir = out.parent_path().empty() ? fs::path(".") : out.parent_path();
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
      SASREC_FAIL(Input, output, ": the output directory ", dir.string(), " does not exist; create it first");
    if (access(dir.c_str(), W_OK | X_OK) != 0)
      SASREC_FAIL(Input, output, ": the output directory ", dir.string(),
                  " is not writable; choose another output path or fix its permissions");
    if (fs::is_directory(out, ec))
      SASREC_FAIL(Input, output, ": is a directory; give the output file name (e.g. ", (out / "data.h5").string(), ")");
  }
  ImportStats st;
  Interactions d = import_interactions(input, opt, &st);
  write_store(output, d);
  st.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return st;
}

}  // namespace sasrec
