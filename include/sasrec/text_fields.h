// text_fields.h: the fields of one line of an interaction log (internal to
// the text import; csv_import.h is its API): blanks, whitespace-separated
// tokens (pairs, seq), csv fields with RFC 4180 quotes, the header's
// columns found by name, and the checks and renderings of ids in messages.
//
// Owns how a line splits into fields. Does not own reading lines
// (line_reader.h), what a row is (row_parser.h) nor the format's choice
// (format_detect.h).
#pragma once

#include <cstddef>
#include <deque>
#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

namespace sasrec::text_import {

inline bool is_space(char c) { return c == ' ' || c == '\t'; }

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// The tokens of `line` split at blanks (spaces, tabs) into *out.
void split_whitespace(std::string_view line, std::vector<std::string_view>* out);

// pairs and seq: a line whose first non-blank character is '#' is a comment.
bool is_comment(std::string_view line);

// Whether the field (trimmed) is an integer or a floating-point number.
bool is_number(std::string_view s);

// CSV fields of one line: RFC 4180 quoting ("a,b", "" for a quote) within a
// line; unquoted fields are taken as written (then trimmed by the caller).
class CsvSplitter {
 public:
  explicit CsvSplitter(char delim) : delim_(delim) {}

  // Returns "" on success, else the problem.
  const char* split(std::string_view line, std::vector<std::string_view>* out);

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

// The first of ',', tab, ';' that `header` holds, or 0.
char delimiter_in(std::string_view header);

// A header column found by name, and a second column of the same name
// (-1: none), which makes the choice ambiguous.
struct Column {
  int index = -1;
  int twin = -1;
};

// The column named `want` (exact, then normalized: lower case without '_',
// '-', ' ', '.'), or the first of `candidates` (normalized names) when
// `want` is empty; index -1 when absent.
Column find_column(const std::vector<std::string_view>& header, const std::string& want,
                   std::initializer_list<const char*> candidates);

// The offset of the first byte of `s` that breaks UTF-8 (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF), or npos.
size_t utf8_error(const unsigned char* s, size_t n);

// Renderings for messages, cut after 60 bytes ("..."):
std::string escaped(std::string_view s);    // an id: printable ASCII as is, other bytes as \xNN
std::string printable(std::string_view s);  // a field as written
// 'a', 'b', 'c': the header's columns.
std::string join(const std::vector<std::string_view>& v);

}  // namespace sasrec::text_import
