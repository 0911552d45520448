// csr_build.h: from the parsed rows to the store's per-user layout
// (internal to the text import; csv_import.h is its API).
//
// Owns the k-core filter, the dense numbering of the kept users and items
// in order of first appearance, the CSR built by counting (O(rows), no
// global sort; no scatter at all when the rows are already grouped by
// user) and the stable sort by time within each user, only where out of
// order. Does not own parsing (row_parser.h) nor writing (store.h).
#pragma once

#include <cstdint>
#include <string>

#include "sasrec/csv_import.h"
#include "sasrec/pod_buf.h"
#include "sasrec/row_parser.h"

namespace sasrec::text_import {

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

// The k-core filters of `options`, the dense numbering and the CSR. Frees
// the rows' arrays and hash tables (not the ids). Rows dropped by the
// filters are added to st->dropped_rows; dropping them all is an
// Error(Input) naming `path`.
Csr build_csr(const std::string& path, const ImportOptions& options, RawRows* rows, ImportStats* st);

}  // namespace sasrec::text_import
