// row_parser.h: the rows of an interaction log as compact integers
// (internal to the text import; csv_import.h is its API).
//
// Owns turning text into rows: csv (the header's columns, the 64-byte
// scan of the fast path, the general per-line path for quotes, blanks and
// errors), pairs and seq lines, ids interned in file order with their
// UTF-8 check, times, and the messages that name FILE:LINE. Does not own
// reading the input (line_reader.h), the field splitting (text_fields.h),
// the time forms (time_parse.h), the choice of the format (format_detect.h)
// nor the per-user layout (csr_build.h).
#pragma once

#include <cstdint>
#include <limits>

#include "sasrec/csv_import.h"
#include "sasrec/line_reader.h"
#include "sasrec/pod_buf.h"
#include "sasrec/string_index.h"

namespace sasrec::text_import {

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

// Reads the rest of `reader`'s input as `format` (not Auto) into `rows`;
// the csv columns used, the delimiter and the comment lines go into `st`
// (may be null). Throws Error(Input) "FILE:LINE: problem; what to do".
void parse_rows(LineReader& reader, const ImportOptions& options, InputFormat format, RawRows* rows, ImportStats* st);

}  // namespace sasrec::text_import
