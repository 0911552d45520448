// csv_import.cpp: the text import of csv2h5 (csv_import.h) as its steps:
// the format (given or detected, format_detect.h), the rows parsed from
// one pass over the input (line_reader.h, row_parser.h), the per-user
// layout (csr_build.h), then either the store written through StoreWriter
// or the Interactions in memory; with the timings and counts of
// ImportStats and the output checked before and after the input is opened.
//
// Owns the orchestration only. The pieces, each in its own file: the
// streaming reader (line_reader), id interning (string_index), field
// splitting (text_fields), time forms (time_parse), row parsing
// (row_parser), format detection (format_detect), CSR building
// (csr_build), growable arrays (pod_buf) and the platform's calls and
// SIMD scan (platform). The HDF5 layout is the store's (store.h).
#include "sasrec/csv_import.h"

#include <chrono>
#include <string>
#include <vector>

#include "sasrec/atomic_file.h"
#include "sasrec/csr_build.h"
#include "sasrec/error.h"
#include "sasrec/format_detect.h"
#include "sasrec/line_reader.h"
#include "sasrec/row_parser.h"

namespace sasrec {

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

namespace {

using text_import::Csr;
using text_import::LineReader;
using text_import::RawRows;

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

// Reads the input of `reader` (once, from where it stands) and builds the
// CSR (the work of import_interactions).
Csr import_csr(LineReader& reader, const ImportOptions& opt, ImportStats* st, RawRows* rows) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const InputFormat format =
      opt.format == InputFormat::Auto ? text_import::detect_format_of(reader, opt.delimiter) : opt.format;
  st->format = format;
  text_import::parse_rows(reader, opt, format, rows, st);
  st->bytes = reader.consumed();
  st->rows = static_cast<int64_t>(rows->user.size());
  const auto t1 = Clock::now();
  st->read_seconds = std::chrono::duration<double>(t1 - t0).count();
  Csr c = text_import::build_csr(reader.path(), opt, rows, st);
  st->sort_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  st->users = c.num_users;
  st->items = c.num_items;
  st->interactions = c.offsets[c.num_users];
  return c;
}

}  // namespace

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
