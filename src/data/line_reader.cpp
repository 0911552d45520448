// line_reader.cpp: LineReader (line_reader.h): opening the input, the
// buffer refilled with read(2) (up to ~1 MiB a refill, doubled for a line
// longer than the buffer), lines and blocks of whole lines, the refusal of
// binary data.
#include "sasrec/line_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "sasrec/error.h"
#include "sasrec/platform.h"

namespace sasrec::text_import {

LineReader::LineReader(const std::string& path, size_t buffer_bytes) : path_(path == "-" ? "stdin" : path) {
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
  if (fstat(fd_, &st) == 0 && S_ISREG(st.st_mode)) platform::advise_sequential(fd_);
  allocate(std::max<size_t>(buffer_bytes, 4096));
}

LineReader::~LineReader() {
  if (owns_fd_) ::close(fd_);
}

std::string_view LineReader::peek(size_t lines, size_t max_bytes) {
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

bool LineReader::next(std::string_view* line) {
  while (true) {
    const char* b = buf_.get() + begin_;
    if (const char* nl = static_cast<const char*>(std::memchr(b, '\n', end_ - begin_))) {
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

bool LineReader::next_block(const char** b, const char** e) {
  while (true) {
    if (begin_ < end_) {
      const char* p = buf_.get() + begin_;
      const char* last = eof_ ? buf_.get() + end_ - 1 : platform::find_last(p, '\n', end_ - begin_);
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

void LineReader::allocate(size_t cap) {
  std::unique_ptr<char[]> bigger(new char[cap + kPad]);
  if (end_ > begin_) std::memcpy(bigger.get(), buf_.get() + begin_, end_ - begin_);
  end_ -= begin_;
  begin_ = 0;
  std::memset(bigger.get() + cap, 0, kPad);
  buf_ = std::move(bigger);
  cap_ = cap;
}

void LineReader::refill() {
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
    if (const void* z = std::memchr(buf_.get() + end_, 0, r)) fail_binary(static_cast<const char*>(z));
    end_ += r;
    got += r;
    if (got >= (1u << 20)) break;
  }
  std::memset(buf_.get() + end_, 0, kPad);  // reads past the data see zeros
}

void LineReader::fail_binary(const char* zero) const {
  const int64_t line = line_ + 1 + std::count(static_cast<const char*>(buf_.get() + begin_), zero, '\n');
  SASREC_FAIL(Input, path_, ":", line,
              ": binary data (a NUL byte); the input must be a text file (csv, pairs or seq). A compressed "
              "file: decompress it on the fly, e.g. zcat FILE.gz | csv2h5 - OUT.h5");
}

}  // namespace sasrec::text_import
