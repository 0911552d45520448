// csv_import.h: reading interaction logs from text (csv with a header,
// whitespace `user item` pairs, `user item item ...` sequences) into the
// in-memory store, with k-core filtering; the library half of csv2h5.
//
// Reading streams through a fixed buffer; rows are kept as compact integers
// (user index, item index, optional time), ids interned once each; the
// per-user layout is built by counting (O(N)), not by a global sort. Users get
// indices 0..U-1 and items 1..I in order of first appearance in the file
// among the rows kept by the filters; each user's interactions are sorted by
// time, stably (ties keep file order; without a time column, file order is
// time order). Bad input throws sasrec::Error(Input) "FILE:LINE: problem;
// what to do". It does not own the HDF5 layout (store.h). The time forms
// accepted are parse_time's (time_parse.h); the pieces of the import are
// listed at the top of src/data/csv_import.cpp.
#pragma once

#include <cstdint>
#include <string>

#include "sasrec/store.h"
#include "sasrec/time_parse.h"

namespace sasrec {

enum class InputFormat { Auto, Csv, Pairs, Seq };

const char* format_name(InputFormat f);
// "auto" | "csv" | "pairs" | "seq"; throws Error(Input) otherwise.
InputFormat parse_input_format(const std::string& name);

struct ImportOptions {
  InputFormat format = InputFormat::Auto;
  std::string user_col;               // csv: column names; "" = detect (user_id, user, userId, reviewerID, ...)
  std::string item_col;               // "" = detect (item_id, item, itemId, movieId, asin, ...)
  std::string time_col;               // "" = detect (timestamp, time, unixReviewTime, ...); none found = file order
  char delimiter = 0;                 // csv: 0 = detect from the header (',' then tab then ';')
  int64_t min_user_interactions = 0;  // k-core filters, applied together until stable
  int64_t min_item_interactions = 0;
  size_t buffer_bytes = 16u << 20;  // read buffer (grows for longer lines)
};

struct ImportStats {
  InputFormat format = InputFormat::Auto;    // the format actually used
  char delimiter = 0;                        // csv only
  std::string user_col, item_col, time_col;  // csv: the columns used ("" = no time column)
  int64_t bytes = 0;                         // input size (bytes read)
  int64_t rows = 0;                          // interactions read (before filters)
  int64_t dropped_rows = 0;                  // removed by the filters
  int64_t users = 0, items = 0, interactions = 0;
  double read_seconds = 0;            // parsing only
  double sort_seconds = 0;            // filters, per-user layout and the sort by time
  double write_seconds = 0;           // the HDF5 write (set by convert_to_store)
  double seconds = 0;                 // everything (set by convert_to_store)
  int64_t comment_lines = 0;          // pairs / seq: lines starting with '#', skipped
  int stale_temporaries_removed = 0;  // OUTPUT.tmp-PID of killed runs removed (convert_to_store)
};

// The format `path` would be read as under --format auto (rule: docs/data.md).
// `delimiter` as in ImportOptions.
InputFormat detect_format(const std::string& path, char delimiter = 0);

// Reads, filters, maps and sorts `path` into a store in memory. The input
// is read once, as a stream: a regular file, a FIFO, /dev/stdin, a process
// substitution or "-" (standard input).
Interactions import_interactions(const std::string& path, const ImportOptions& options, ImportStats* stats = nullptr);

// import_interactions + the store written to `output` (an AtomicOutput:
// checked before the input is read; never a non-regular file, never the
// input itself; replaced only on success and no partial file is left).
ImportStats convert_to_store(const std::string& input, const std::string& output, const ImportOptions& options);

}  // namespace sasrec
