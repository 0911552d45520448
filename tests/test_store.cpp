// test_store.cpp: the HDF5 store: round trips, the streaming writer, atomic
// replacement, shard_range/load_shard partitions and balance, and the
// validation of corrupt files (each error names the file and the problem).
#include <hdf5.h>

#include <algorithm>
#include <random>

#include "sasrec/error.h"
#include "sasrec/store.h"
#include "test_util.h"

namespace sasrec {
namespace {

using test::TempDir;

// Random CSR data: U users with lengths 0..max_len, items in 1..I.
Interactions make_data(int64_t U, int64_t I, bool with_times, uint32_t seed, int max_len = 12) {
  std::mt19937 rng(seed);
  Interactions d;
  for (int64_t u = 0; u < U; ++u) {
    int len = static_cast<int>(rng() % (max_len + 1));
    int64_t t = 1000 + rng() % 1000;
    for (int k = 0; k < len; ++k) {
      d.items.push_back(static_cast<int32_t>(1 + rng() % I));
      if (with_times) d.timestamps.push_back(t += rng() % 50);
    }
    d.offsets.push_back(static_cast<int64_t>(d.items.size()));
    d.user_ids.push_back("user \"" + std::to_string(u) + "\" \xC3\xA9");  // quotes and UTF-8
  }
  for (int64_t i = 1; i <= I; ++i) d.item_ids.push_back("item-" + std::to_string(i * 7));
  return d;
}

void expect_equal(const Interactions& a, const Interactions& b) {
  EXPECT_EQ(a.offsets, b.offsets);
  EXPECT_EQ(a.items, b.items);
  EXPECT_EQ(a.timestamps, b.timestamps);
  EXPECT_EQ(a.user_ids, b.user_ids);
  EXPECT_EQ(a.item_ids, b.item_ids);
}

// Runs f, expects a sasrec::Error whose message holds every one of `parts`.
template <typename F>
void expect_error(F f, std::initializer_list<std::string> parts) {
  try {
    f();
    ADD_FAILURE() << "no error thrown; expected one mentioning " << *parts.begin();
  } catch (const Error& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\n  lacks: " << p;
  }
}

TEST(Store, RoundTripWithTimestamps) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  Interactions d = make_data(57, 23, true, 1);
  write_store(path, d);
  expect_equal(read_store(path), d);
  StoreInfo info = read_store_info(path);
  EXPECT_EQ(info.version, 1);
  EXPECT_EQ(info.num_users, 57);
  EXPECT_EQ(info.num_items, 23);
  EXPECT_EQ(info.num_interactions, d.num_interactions());
  EXPECT_TRUE(info.has_timestamps);
  EXPECT_EQ(read_item_ids(path), d.item_ids);
  // Only the file itself: no temporary left next to it.
  EXPECT_EQ(std::distance(test::fs::directory_iterator(dir.path()), test::fs::directory_iterator()), 1);
}

TEST(Store, RoundTripWithoutTimestamps) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  Interactions d = make_data(40, 9, false, 2);
  write_store(path, d);
  expect_equal(read_store(path), d);
  EXPECT_FALSE(read_store_info(path).has_timestamps);
}

TEST(Store, EmptyStoreAndZeroLengthUsers) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  Interactions d;
  d.offsets = {0, 0, 0};
  d.user_ids = {"a", "b"};
  d.item_ids = {"", "x"};
  write_store(path, d);
  expect_equal(read_store(path), d);
}

TEST(Store, BigStreamingWriteCrossesBufferFlushes) {
  TempDir dir;
  const std::string path = dir.file("big.h5");
  Interactions d = make_data(150000, 5000, true, 3, 30);  // > 1M items, > 64K users: several flushes
  write_store(path, d);
  expect_equal(read_store(path), d);
}

TEST(Store, WriterValidatesInput) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  Interactions d = make_data(5, 4, false, 4);
  Interactions empty_user = d;
  empty_user.user_ids[2] = "";
  expect_error([&] { write_store(path, empty_user); }, {path, "user 2 has an empty id"});
  Interactions empty_item = d;
  empty_item.item_ids[3] = "";
  expect_error([&] { write_store(path, empty_item); }, {path, "item 3 has an empty id"});
  Interactions out_of_range = make_data(5, 4, false, 4);
  out_of_range.items[0] = 5;
  expect_error([&] { write_store(path, out_of_range); }, {path, "items[0] = 5 is outside 1..4"});
  Interactions bad_offsets = make_data(5, 4, false, 5);
  bad_offsets.offsets.back() += 1;
  expect_error([&] { write_store(path, bad_offsets); }, {path, "offsets end at"});
  Interactions bad_times = make_data(5, 4, true, 5);
  bad_times.timestamps.pop_back();
  if (bad_times.num_interactions() > 0) expect_error([&] { write_store(path, bad_times); }, {path, "timestamps for"});
  EXPECT_TRUE(test::fs::is_empty(dir.path())) << "nothing written, no temporary left";

  // The streaming writer: an item above I, found at finish(), removes the temporary.
  {
    StoreWriter w(path, false);
    int32_t items[] = {1, 9};
    w.add_user("u", items, nullptr, 2);
    expect_error([&] { w.finish(std::vector<std::string>{"", "a", "b"}); }, {path, "item 9", "only 2 items"});
  }
  { StoreWriter w(path, false); }  // abandoned without finish()
  EXPECT_TRUE(test::fs::is_empty(dir.path()));
}

TEST(Store, ExistingFileReplacedOnlyOnSuccess) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  test::write_text(path, "precious");
  Interactions bad = make_data(5, 4, false, 6);
  bad.user_ids[0] = "";
  EXPECT_THROW(write_store(path, bad), Error);
  EXPECT_EQ(test::read_text(path), "precious");
  Interactions good = make_data(5, 4, false, 6);
  write_store(path, good);
  expect_equal(read_store(path), good);
}

TEST(Store, ItemMapFingerprint) {
  // FNV-1a-64 of "a\0bc\0" and of "bc\0a\0", computed outside this code (Python).
  EXPECT_EQ(item_map_fingerprint({"", "a", "bc"}), 0x401801fc84f3ca79ull);
  EXPECT_EQ(item_map_fingerprint({"", "bc", "a"}), 0x33b6ce90e704a16full) << "the same ids in another order";
  EXPECT_NE(item_map_fingerprint({"", "ab", "c"}), item_map_fingerprint({"", "a", "bc"}));
  EXPECT_EQ(fingerprint_hex(0x401801fc84f3ca79ull), "401801fc84f3ca79");
  TempDir dir;
  Interactions d;
  d.item_ids = {"", "a", "bc"};
  d.items = {1, 2, 2};
  d.offsets = {0, 3};
  d.user_ids = {"u"};
  const std::string path = dir.file("s.h5");
  write_store(path, d);
  EXPECT_EQ(read_item_map_fingerprint(path), 0x401801fc84f3ca79ull);
  // A store written before the attribute: computed from its map.
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  ASSERT_GE(H5Adelete(f, "item_map_fnv1a64"), 0);
  H5Fclose(f);
  EXPECT_EQ(read_item_map_fingerprint(path), 0x401801fc84f3ca79ull);
}

TEST(Store, ShardRangesPartitionAndBalance) {
  TempDir dir;
  const std::string path = dir.file("a.h5");
  Interactions d = make_data(101, 30, false, 7, 20);
  write_store(path, d);
  const int64_t U = d.num_users(), N = d.num_interactions();
  int64_t max_len = 0;
  for (int64_t u = 0; u < U; ++u) max_len = std::max(max_len, d.offsets[u + 1] - d.offsets[u]);
  for (int world : {1, 2, 3, 4, 5, 6, 7, 150, 1000}) {
    int64_t next = 0;
    for (int rank = 0; rank < world; ++rank) {
      UserRange r = shard_range(d.offsets, rank, world);
      EXPECT_EQ(r.begin, next) << "world " << world << " rank " << rank;
      EXPECT_LE(r.begin, r.end);
      next = r.end;
      const int64_t count = d.offsets[r.end] - d.offsets[r.begin];
      if (world <= 7) EXPECT_LE(std::llabs(count - N / world), max_len + 1) << "world " << world << " rank " << rank;
      Shard s = load_shard(path, rank, world);
      EXPECT_EQ(s.users.begin, r.begin);
      EXPECT_EQ(s.users.end, r.end);
      EXPECT_EQ(s.num_items, 30);
      EXPECT_EQ(s.num_users_total, U);
      ASSERT_EQ(s.size(), r.size());
      for (int64_t u = 0; u < s.size(); ++u) {
        const int64_t g = r.begin + u;
        std::vector<int32_t> want(d.items.begin() + d.offsets[g], d.items.begin() + d.offsets[g + 1]);
        std::vector<int32_t> got(s.sequence(u), s.sequence(u) + s.length(u));
        EXPECT_EQ(got, want) << "user " << g;
      }
    }
    EXPECT_EQ(next, U) << "world " << world;
  }
  // Degenerate inputs still partition.
  std::vector<int64_t> none{0};
  EXPECT_EQ(shard_range(none, 2, 3).size(), 0);
  std::vector<int64_t> zeros{0, 0, 0, 0};
  int64_t next = 0;
  for (int rank = 0; rank < 3; ++rank) {
    UserRange r = shard_range(zeros, rank, 3);
    EXPECT_EQ(r.begin, next);
    next = r.end;
  }
  EXPECT_EQ(next, 3);
  EXPECT_THROW(shard_range(d.offsets, 3, 3), Error);
  EXPECT_THROW(shard_range(d.offsets, 0, 0), Error);
}

// ---- corrupt files --------------------------------------------------------------------------------

class CorruptStore : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("c.h5");
    data_ = make_data(20, 10, true, 8);
    write_store(path_, data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  // Opens the good file for editing.
  hid_t open_rw() {
    hid_t f = H5Fopen(path_.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    EXPECT_GE(f, 0);
    return f;
  }
  void rewrite_dataset(const char* name, hid_t type, const void* data) {
    hid_t f = open_rw();
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    ASSERT_GE(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(ds);
    H5Fclose(f);
  }
  TempDir dir_;
  std::string path_;
  Interactions data_;
};

TEST_F(CorruptStore, WrongFormatAttribute) {
  hid_t f = open_rw();
  H5Adelete(f, "format");
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, 6);
  hid_t s = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(f, "format", t, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, t, "other");
  H5Aclose(a);
  H5Sclose(s);
  H5Tclose(t);
  H5Fclose(f);
  expect_error([&] { read_store_info(path_); }, {path_, "'format' is 'other'", "sasrec-interactions"});
}

TEST_F(CorruptStore, WrongVersion) {
  hid_t f = open_rw();
  hid_t a = H5Aopen(f, "version", H5P_DEFAULT);
  int v = 2;
  H5Awrite(a, H5T_NATIVE_INT, &v);
  H5Aclose(a);
  H5Fclose(f);
  expect_error([&] { read_store_info(path_); }, {path_, "version 2", "reads version 1"});
  expect_error([&] { load_shard(path_, 0, 1); }, {path_, "version 2"});
}

TEST_F(CorruptStore, MissingDataset) {
  hid_t f = open_rw();
  H5Ldelete(f, "/interactions/item", H5P_DEFAULT);
  H5Fclose(f);
  expect_error([&] { read_store_info(path_); }, {path_, "missing dataset /interactions/item"});
}

TEST_F(CorruptStore, MissingGroup) {
  hid_t f = open_rw();
  H5Ldelete(f, "/maps", H5P_DEFAULT);
  H5Fclose(f);
  expect_error([&] { read_store(path_); }, {path_, "missing dataset /maps/user_id"});
}

TEST_F(CorruptStore, WrongDtype) {
  hid_t f = open_rw();
  H5Ldelete(f, "/interactions/item", H5P_DEFAULT);
  hsize_t n[1] = {static_cast<hsize_t>(data_.num_interactions())};
  hid_t s = H5Screate_simple(1, n, nullptr);
  hid_t ds = H5Dcreate2(f, "/interactions/item", H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dclose(ds);
  H5Sclose(s);
  H5Fclose(f);
  expect_error([&] { read_store_info(path_); }, {path_, "/interactions/item has dtype float", "32-bit integer"});
}

TEST_F(CorruptStore, ShapeDisagreesWithHeader) {
  hid_t f = open_rw();
  hid_t a = H5Aopen(f, "num_users", H5P_DEFAULT);
  int64_t v = 21;
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a);
  H5Fclose(f);
  expect_error([&] { read_store_info(path_); }, {path_, "/users/offsets has 21 rows, expected 22"});
}

TEST_F(CorruptStore, NonMonotoneOffsets) {
  std::vector<int64_t> off = data_.offsets;
  int64_t bad = -1;
  for (size_t u = 1; u + 1 < off.size(); ++u)
    if (off[u + 1] > off[u - 1]) {
      bad = static_cast<int64_t>(u);
      break;
    }
  ASSERT_GE(bad, 0);
  off[bad] = off[bad + 1] + 1;  // larger than its successor
  rewrite_dataset("/users/offsets", H5T_NATIVE_INT64, off.data());
  const std::string where = "/users/offsets[" + std::to_string(bad + 1) + "]";
  expect_error([&] { read_store(path_); }, {path_, where, "non-decreasing"});
  expect_error([&] { load_shard(path_, 0, 2); }, {path_, where});
}

TEST_F(CorruptStore, OffsetsPastTheEnd) {
  std::vector<int64_t> off = data_.offsets;
  off.back() += 5;  // the last user runs past the interactions
  rewrite_dataset("/users/offsets", H5T_NATIVE_INT64, off.data());
  const std::string where = "/users/offsets[" + std::to_string(off.size() - 1) + "]";
  expect_error([&] { read_store(path_); }, {path_, where, "expected num_interactions"});
  expect_error([&] { load_shard(path_, 1, 2); }, {path_, where});
}

TEST_F(CorruptStore, ItemOutOfRange) {
  std::vector<int32_t> items = data_.items;
  ASSERT_GT(items.size(), 5u);
  items[5] = 11;
  rewrite_dataset("/interactions/item", H5T_NATIVE_INT32, items.data());
  expect_error([&] { read_store(path_); }, {path_, "/interactions/item[5] = 11 is outside 1..10"});
  // The shard holding index 5 finds it; reported with its global index.
  expect_error([&] { load_shard(path_, 0, 1); }, {path_, "/interactions/item[5]"});
  items[5] = 0;
  rewrite_dataset("/interactions/item", H5T_NATIVE_INT32, items.data());
  expect_error([&] { read_store(path_); }, {path_, "/interactions/item[5] = 0"});
}

TEST_F(CorruptStore, TruncatedFile) {
  const std::string bytes = test::read_text(path_);
  for (size_t keep : {bytes.size() / 2, bytes.size() - 100, size_t{100}}) {
    test::write_text(path_, bytes.substr(0, keep));
    expect_error([&] { read_store_info(path_); }, {path_, "not an HDF5 file (or truncated)"});
  }
}

TEST_F(CorruptStore, NotHdf5) {
  test::write_text(path_, "user_id,item_id\n1,2\n");
  expect_error([&] { read_store_info(path_); }, {path_, "not an HDF5 file"});
  expect_error([&] { read_store_info(dir_.file("missing.h5")); }, {"missing.h5", "no such file"});
}

}  // namespace
}  // namespace sasrec
