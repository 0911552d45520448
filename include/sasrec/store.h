// store.h: the HDF5 interaction store, the contract between csv2h5 /
// sasrec_synth (writers) and the trainer's ranks (readers).
//
// Layout, version 1:
//   / attrs: format = "sasrec-interactions", version = 1,
//            num_users, num_items, num_interactions
//   /users/offsets          int64 [U+1]  CSR offsets into /interactions/item
//   /interactions/item      int32 [N]    item index 1..I, each user's in time order
//   /interactions/timestamp int64 [N]    only when the input had times
//   /maps/user_id           string [U]   original id of user u
//   /maps/item_id           string [I+1] original id of item i (row 0 = padding, "")
//   / attr item_map_fnv1a64 uint64       item_map_fingerprint() of /maps/item_id (written
//                                        since the attribute exists; older stores lack it)
//
// This file owns reading, validating and writing that layout and the
// sharding of users over ranks. It knows nothing of MPI: a shard is a pure
// function of (file, rank, world_size), so sharding is testable in one process.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "sasrec/atomic_file.h"

namespace sasrec {

inline constexpr const char* kStoreFormat = "sasrec-interactions";
inline constexpr int kStoreVersion = 1;

// The whole store in memory (CSR over users). Used by writers and tests.
struct Interactions {
  std::vector<int64_t> offsets{0};        // [U+1], offsets[0] = 0, non-decreasing
  std::vector<int32_t> items;             // [N], each in 1..I
  std::vector<int64_t> timestamps;        // [N] or empty when the input had no times
  std::vector<std::string> user_ids;      // [U]
  std::vector<std::string> item_ids{""};  // [I+1], row 0 is the padding item

  int64_t num_users() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t num_items() const { return static_cast<int64_t>(item_ids.size()) - 1; }
  int64_t num_interactions() const { return static_cast<int64_t>(items.size()); }
};

struct StoreInfo {
  int version = 0;
  int64_t num_users = 0;
  int64_t num_items = 0;
  int64_t num_interactions = 0;
  bool has_timestamps = false;
};

// Users [begin, end) as global indices.
struct UserRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// One rank's users: their sequences, with CSR offsets relative to the shard.
struct Shard {
  UserRange users;                  // global indices of the shard's users
  int64_t num_items = 0;            // catalog size I of the whole store
  int64_t num_users_total = 0;      // U of the whole store
  std::vector<int64_t> offsets{0};  // [users.size()+1], offsets[0] = 0
  std::vector<int32_t> items;       // the shard's interactions, 1..I
  std::vector<int64_t> timestamps;  // same layout as items; empty unless loaded with timestamps

  int64_t size() const { return users.size(); }
  int64_t length(int64_t local_user) const { return offsets[local_user + 1] - offsets[local_user]; }
  const int32_t* sequence(int64_t local_user) const { return items.data() + offsets[local_user]; }
};

// HDF5 prints nothing itself (no HDF5-DIAG) and registers no exit handler:
// every failure becomes one sasrec::Error. Every binary calls it first; the
// readers and writers here call it too. Idempotent. Declared here, where
// every binary finds it; defined with the HDF5 layer (h5.cpp).
void silence_hdf5_errors();

// The fingerprint of an item map (rows 1..I; row 0 is the padding):
// FNV-1a-64 over each id followed by a NUL byte. Two stores with the same
// ids in another order (the same log converted in another row order) differ.
uint64_t item_map_fingerprint(const std::vector<std::string>& item_ids);
// A store's: its item_map_fnv1a64 attribute, computed from /maps/item_id
// for stores written before the attribute existed.
uint64_t read_item_map_fingerprint(const std::string& path);
// 16 hex digits, as messages show a fingerprint.
std::string fingerprint_hex(uint64_t fingerprint);

// Streaming writer for stores too big to hold twice in memory (the
// generator at 10M users x 10M items, csv2h5 on 100M rows). Users are
// appended in index order into extendable chunked datasets under
// `path + ".tmp-<pid>"` (an AtomicOutput: `path` is checked first and may
// not be one of `inputs`); finish() writes the item map, its fingerprint
// and the header and renames the file into place. Destroyed (or failing)
// before finish(), it removes the temporary file, so `path` is never left
// half written.
class StoreWriter {
 public:
  StoreWriter(const std::string& path, bool with_timestamps, const std::vector<RunInput>& inputs = {});
  ~StoreWriter();
  StoreWriter(const StoreWriter&) = delete;
  StoreWriter& operator=(const StoreWriter&) = delete;

  // Appends the next user (indices 0, 1, ... in call order) with n interactions in time
  // order; items must be >= 1 (the upper bound is checked in finish());
  // timestamps: n values, or nullptr when the writer has no timestamps.
  void add_user(std::string_view id, const int32_t* items, const int64_t* timestamps, int64_t n);

  // Extra numeric attribute on the root group (e.g. the generator's oracle
  // HR@10); readers ignore attributes they do not know.
  void set_attribute(const std::string& name, double value);

  // item_ids: [I+1], row 0 the padding item "". Every item appended must be <= I.
  void finish(const std::vector<std::string>& item_ids);
  // Same, with ids produced on the fly (item_id(i) for i in 1..num_items).
  void finish(int64_t num_items, const std::function<std::string(int64_t)>& item_id);

  // PATH.tmp-PID files of killed writers removed when this one started.
  int stale_temporaries_removed() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes `data` to `path` atomically (a temporary file renamed on success;
// an existing file is replaced only then). Validates `data` first.
void write_store(const std::string& path, const Interactions& data);

// Opens `path`, validates the schema (format, version, datasets, dtypes,
// shapes) and returns its header. Throws sasrec::Error naming the file and
// what is wrong.
StoreInfo read_store_info(const std::string& path);

// The whole store, validated (offsets monotonic and in range, items in 1..I).
Interactions read_store(const std::string& path);

// Rank `rank` of `world_size`: a contiguous user range, balanced by
// interaction count (each range holds about N / world_size interactions).
// The ranges of all ranks partition [0, U).
UserRange shard_range(const std::vector<int64_t>& offsets, int rank, int world_size);

// Reads only rank's slice of the store (HDF5 hyperslabs) and validates it.
// `with_timestamps`: also its slice of /interactions/timestamp (the time
// split); a store without them is refused, saying how to make one.
Shard load_shard(const std::string& path, int rank, int world_size, bool with_timestamps = false);

// The original item ids (row 0 the padding item ""), for output by id (recommend).
std::vector<std::string> read_item_ids(const std::string& path);

}  // namespace sasrec
