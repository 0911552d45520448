// time_parse.h: the time fields of interaction logs (csv2h5's time column).
//
// Owns the accepted forms of a time and their conversion to unix seconds.
// Does not own which column holds the time (row_parser.cpp) nor what is
// said about a field that does not parse (the parser's message).
#pragma once

#include <cstdint>
#include <string_view>

namespace sasrec {

// Parses a time field: integer (unix seconds, any int64 including its
// minimum), float (rounded to the nearest integer), "YYYY-MM-DD",
// "YYYY-MM-DD HH:MM[:SS[.fff]]" or with 'T', optional trailing 'Z' (all
// UTC; a day the month does not have, 2019-02-29 or 2020-04-31, is
// unparsable). Returns false when unparsable.
bool parse_time(const char* begin, const char* end, int64_t* out);

// The same, with plain unix seconds (up to 18 digits, the common case)
// read inline: csv2h5 calls it once a row.
inline bool parse_time_fast(std::string_view t, int64_t* out) {
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

}  // namespace sasrec
