// format_detect.cpp: the --format auto rule (docs/data.md) of
// format_detect.h, from the input's first lines; and detect_format
// (csv_import.h) on a path.
#include "sasrec/format_detect.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "sasrec/error.h"
#include "sasrec/text_fields.h"

namespace sasrec {
namespace text_import {
namespace {

// The format of an input from its first lines `prefix`: whole lines, the
// last one too when `complete` (the input ends there). `path` names the
// input in messages; `delimiter` as in ImportOptions.
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
      const char d = delimiter ? delimiter : delimiter_in(line);
      if (d) {
        CsvSplitter split(d);
        split.split(line, &f);
        bool header =
            f.size() >= 2 && std::any_of(f.begin(), f.end(), [](std::string_view s) { return !is_number(s); });
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

}  // namespace

InputFormat detect_format_of(LineReader& reader, char delimiter) {
  const std::string_view prefix = reader.peek(kPeekLines, kPeekBytes);
  return detect_in(prefix, reader.at_eof_after_peek(), reader.path(), delimiter);
}

}  // namespace text_import

InputFormat detect_format(const std::string& path, char delimiter) {
  text_import::LineReader reader(path, 1 << 16);
  return text_import::detect_format_of(reader, delimiter);
}

}  // namespace sasrec
