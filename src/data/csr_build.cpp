// csr_build.cpp: build_csr (csr_build.h) in its steps: the k-core filter,
// the renumbering among the kept rows, the count per user, the layout
// (moved as is, or scattered stably), the sort by time within each user.
#include "sasrec/csr_build.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "sasrec/error.h"

namespace sasrec::text_import {
namespace {

// Stable sort by time within each user's segment, only where out of order.
template <typename T>
void sort_by_time(const PodBuf<int64_t>& offsets, int64_t num_users, PodBuf<int32_t>* items, PodBuf<T>* times) {
  std::vector<std::pair<T, int32_t>> tmp;
  for (int64_t u = 0; u < num_users; ++u) {
    const int64_t b = offsets[u], n = offsets[u + 1] - b;
    T* t = times->data() + b;
    int32_t* it = items->data() + b;
    int64_t j = 1;
    while (j < n && t[j - 1] <= t[j]) ++j;
    if (j >= n) continue;
    if (n <= 64) {  // insertion sort, in place
      for (; j < n; ++j) {
        const T tv = t[j];
        const int32_t iv = it[j];
        int64_t k = j;
        for (; k > 0 && t[k - 1] > tv; --k) {
          t[k] = t[k - 1];
          it[k] = it[k - 1];
        }
        t[k] = tv;
        it[k] = iv;
      }
      continue;
    }
    tmp.clear();
    for (int64_t k = 0; k < n; ++k) tmp.emplace_back(t[k], it[k]);
    std::stable_sort(tmp.begin(), tmp.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    for (int64_t k = 0; k < n; ++k) {
      t[k] = tmp[k].first;
      it[k] = tmp[k].second;
    }
  }
}

// out[pos[user[r]]++] = in[r] over the kept rows.
template <typename T>
void scatter(const PodBuf<int64_t>& offsets, int64_t num_users, const PodBuf<int32_t>& user,
             const PodBuf<uint8_t>& kept, const T* in, PodBuf<T>* out) {
  PodBuf<int64_t> pos(num_users);
  std::memcpy(pos.data(), offsets.data(), num_users * sizeof(int64_t));
  out->resize(offsets[num_users]);
  const int64_t R = static_cast<int64_t>(user.size());
  const int32_t* ru = user.data();
  T* o = out->data();
  for (int64_t r = 0; r < R; ++r) {
    if (!kept.empty() && !kept[r]) continue;
    o[pos[ru[r]]++] = in[r];
  }
}

// The rows the k-core filters keep (1) and drop (0): users with fewer than
// min_user_interactions rows and items with fewer than
// min_item_interactions, removed together until nothing changes.
PodBuf<uint8_t> k_core(const RawRows& rows, const ImportOptions& opt, int64_t* dropped) {
  const int64_t R = static_cast<int64_t>(rows.user.size());
  PodBuf<uint8_t> kept(R);
  std::fill(kept.begin(), kept.end(), 1);
  std::vector<int64_t> ucount(rows.users.size(), 0), icount(rows.items.size(), 0);
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
        ++*dropped;
        changed = true;
      }
    }
  }
  return kept;
}

// Numbers the users and items of the kept rows in order of first
// appearance among them; the rows get the new indices in place, c's
// user_raw and item_raw map them back to the ids.
void renumber(RawRows* rows, const PodBuf<uint8_t>& kept, Csr* c) {
  const int64_t R = static_cast<int64_t>(rows->user.size());
  PodBuf<int32_t> user_new(rows->users.size()), item_new(rows->items.size());
  std::fill(user_new.begin(), user_new.end(), -1);
  std::fill(item_new.begin(), item_new.end(), -1);
  for (int64_t r = 0; r < R; ++r) {
    if (!kept[r]) continue;
    int32_t& u = user_new[rows->user[r]];
    if (u < 0) {
      u = static_cast<int32_t>(c->user_raw.size());
      c->user_raw.push_back(rows->user[r]);
    }
    int32_t& i = item_new[rows->item[r]];
    if (i < 0) {
      i = static_cast<int32_t>(c->item_raw.size());
      c->item_raw.push_back(rows->item[r]);
    }
    rows->user[r] = u;
    rows->item[r] = i;
  }
  c->num_users = static_cast<int64_t>(c->user_raw.size());
  c->num_items = static_cast<int64_t>(c->item_raw.size());
}

// c->offsets from the count of kept rows per user; returns whether each
// user's rows are already contiguous (the rows grouped by user).
bool count_per_user(const RawRows& rows, const PodBuf<uint8_t>& kept, Csr* c) {
  const int64_t R = static_cast<int64_t>(rows.user.size());
  const int64_t U = c->num_users;
  c->offsets.resize(U + 1);
  std::fill(c->offsets.begin(), c->offsets.end(), 0);
  bool grouped = true;
  int32_t prev = 0;
  for (int64_t r = 0; r < R; ++r) {
    if (!kept.empty() && !kept[r]) continue;
    const int32_t u = rows.user[r];
    ++c->offsets[u + 1];
    grouped = grouped && u >= prev;
    prev = u;
  }
  for (int64_t u = 0; u < U; ++u) c->offsets[u + 1] += c->offsets[u];
  return grouped;
}

// The items (1..I) and times of the kept rows into c in user order: moved
// as they are when already grouped with none dropped (a user-sorted log,
// seq files), else scattered to each user's next slot (stable: file order
// per user), the items first, then the times into the pages the row items
// gave back.
void lay_out(RawRows* rows, const PodBuf<uint8_t>& kept, bool grouped, Csr* c) {
  const int64_t R = static_cast<int64_t>(rows->user.size());
  const int64_t U = c->num_users;
  for (int64_t r = 0; r < R; ++r) ++rows->item[r];
  if (grouped && kept.empty()) {
    c->items = std::move(rows->item);
    c->times = std::move(rows->time);
    return;
  }
  scatter(c->offsets, U, rows->user, kept, rows->item.data(), &c->items);
  rows->item.release();
  if (!rows->has_time) return;
  c->times.base = rows->time.base;
  c->times.is_wide = rows->time.is_wide;
  if (c->times.is_wide)
    scatter(c->offsets, U, rows->user, kept, rows->time.wide.data(), &c->times.wide);
  else
    scatter(c->offsets, U, rows->user, kept, rows->time.narrow.data(), &c->times.narrow);
}

}  // namespace

Csr build_csr(const std::string& path, const ImportOptions& opt, RawRows* rows, ImportStats* st) {
  const int64_t R = static_cast<int64_t>(rows->user.size());
  Csr c;
  rows->users.drop_table();  // parsing is over: give the pages to the arrays below
  rows->items.drop_table();

  PodBuf<uint8_t> kept;  // empty = all rows kept
  if (opt.min_user_interactions > 1 || opt.min_item_interactions > 1) {
    int64_t dropped = 0;
    kept = k_core(*rows, opt, &dropped);
    st->dropped_rows += dropped;
    if (dropped == R)
      SASREC_FAIL(Input, path, ": all ", R, " rows were dropped by --min-user-interactions ", opt.min_user_interactions,
                  " / --min-item-interactions ", opt.min_item_interactions, "; lower the thresholds");
  }
  if (kept.empty()) {  // the indices from parsing are already in order of first appearance
    c.num_users = rows->users.size();
    c.num_items = rows->items.size();
  } else {
    renumber(rows, kept, &c);
  }
  const bool grouped = count_per_user(*rows, kept, &c);
  lay_out(rows, kept, grouped, &c);
  rows->user.release();
  rows->item.release();
  rows->time.release();
  if (rows->has_time && c.times.is_wide)
    sort_by_time(c.offsets, c.num_users, &c.items, &c.times.wide);
  else if (rows->has_time)
    sort_by_time(c.offsets, c.num_users, &c.items, &c.times.narrow);
  return c;
}

}  // namespace sasrec::text_import
