// line_reader.h: the streaming reader of csv2h5's input (internal to the
// text import; csv_import.h is its API).
//
// Owns opening the input (a path or "-"), the read buffer, line numbers and
// the refusal of binary data (a NUL byte). Does not own what a line means:
// fields (text_fields.h), rows (row_parser.h), the format (format_detect.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

namespace sasrec::text_import {

// Readable bytes after any field of the read buffer (and after the buffer):
// the scanners read whole 64-byte blocks, the keys 24 bytes.
inline constexpr size_t kPad = 64;

// Reads the input once, as a stream, through a buffer refilled with read(2):
// a regular file, a FIFO, /dev/stdin, "-" (standard input) or a process
// substitution (<(zcat f.gz)) alike, so nothing is read twice. Either line by
// line (next(): without "\n" or "\r\n", the UTF-8 byte order mark removed)
// or as blocks of whole lines (next_block()); peek() shows the first lines
// without consuming them (format detection). Views stay valid until the next
// call; kPad readable bytes follow every view.
class LineReader {
 public:
  // Throws Error(Input) naming `path` when it cannot be opened.
  LineReader(const std::string& path, size_t buffer_bytes);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // The unread bytes, after reading until they hold `lines` newlines, the
  // end of the input or `max_bytes`; nothing is consumed.
  std::string_view peek(size_t lines, size_t max_bytes);
  bool at_eof_after_peek() const { return eof_; }

  // The next line; false at the end.
  bool next(std::string_view* line);

  // The next run of whole lines [*b, *e), each ending in '\n' except perhaps
  // the last line of the file; false at the end. Does not count lines: the
  // caller does (set_line_number()).
  bool next_block(const char** b, const char** e);

  int64_t line_number() const { return line_; }
  void set_line_number(int64_t line) { line_ = line; }
  int64_t consumed() const { return consumed_; }     // bytes handed out so far (the input's size at the end)
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
  void allocate(size_t cap);
  void refill();
  [[noreturn]] void fail_binary(const char* zero) const;

  std::string path_;
  std::unique_ptr<char[]> buf_;
  size_t cap_ = 0;  // usable bytes; kPad more are allocated
  int fd_ = -1;
  bool owns_fd_ = false;
  size_t begin_ = 0, end_ = 0;
  bool eof_ = false;
  int64_t line_ = 0;
  int64_t consumed_ = 0;
};

}  // namespace sasrec::text_import
