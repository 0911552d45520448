// store.cpp: the HDF5 interaction store (layout in store.h): the streaming
// StoreWriter and write_store on top of it, the schema-validating readers
// (read_store_info, read_store, load_shard, the item map) and shard_range.
//
// It talks to HDF5 through the HDF5 layer (h5.h: handles, the one error
// check, attributes, row blocks, strings); HDF5's own error printing is off
// while we run (ErrorPrintGuard); every failure becomes a sasrec::Error
// naming the file, the dataset and what to do. It owns no parsing of text
// formats (csv_import.cpp), no HDF5 mechanism of its own and no MPI.
#include "sasrec/store.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "sasrec/atomic_file.h"
#include "sasrec/error.h"
#include "sasrec/fnv.h"
#include "sasrec/h5.h"

namespace sasrec {
namespace {

using detail::cat;
using h5::Handle;

// HDF5 prints its error stack (dozens of HDF5-DIAG lines) on every failed
// call unless told not to; every failure here becomes one sasrec::Error.
struct ErrorPrintGuard {
  ErrorPrintGuard() { silence_hdf5_errors(); }
};

// Corrupt or foreign file: a user-facing input error that names the file.
[[noreturn]] void fail_corrupt(const std::string& path, const std::string& problem) {
  SASREC_FAIL(Input, path, ": ", problem,
              "; the file is not a valid sasrec-interactions store: regenerate it with csv2h5 or sasrec_synth");
}

constexpr hsize_t kChunkElems = 64 * 1024;        // numeric datasets
constexpr hsize_t kStringChunkElems = 16 * 1024;  // /maps

// The type of a string map: fixed-length (NUL-padded to the longest id),
// unless that wastes much more than variable-length strings would take
// (~32 bytes of reference and heap header per id): fixed-length strings are
// written ~10x faster, since each vlen string is a separate heap object.
Handle map_string_type(size_t max_len, size_t total_len, size_t count) {
  if (max_len > 0 && max_len <= 1024 && max_len * count <= 2 * (total_len + 32 * count))
    return h5::fixed_string_type(max_len, H5T_STR_NULLPAD, H5T_CSET_UTF8);
  return h5::vlen_string_type();
}

// NUL-terminated strings back to back, for the id maps.
struct StringList {
  std::vector<char> bytes;
  std::vector<uint64_t> starts{0};  // [n+1]; string k is bytes[starts[k], starts[k+1] - 1)
  size_t max_len = 0;

  void add(std::string_view s) {
    bytes.insert(bytes.end(), s.begin(), s.end());
    bytes.push_back('\0');
    starts.push_back(bytes.size());
    max_len = std::max(max_len, s.size());
  }
  size_t size() const { return starts.size() - 1; }
  const char* c_str(size_t k) const { return bytes.data() + starts[k]; }
  size_t length(size_t k) const { return starts[k + 1] - starts[k] - 1; }
};

// Writes `ids` as the 1-D string dataset `name` (type: map_string_type).
void write_string_map(hid_t file, const std::string& path, const char* name, const StringList& ids) {
  const size_t n = ids.size();
  Handle type = map_string_type(ids.max_len, ids.bytes.size() - n, n);
  h5::Appender map(file, path, name, type.get(), type.get(), kStringChunkElems);
  const size_t batch = 1 << 18;
  if (H5Tis_variable_str(type.get()) > 0) {
    std::vector<const char*> ptrs;
    for (size_t b = 0; b < n; b += batch) {
      const size_t m = std::min(batch, n - b);
      ptrs.resize(m);
      for (size_t k = 0; k < m; ++k) ptrs[k] = ids.c_str(b + k);
      map.append(ptrs.data(), m);
    }
  } else {
    const size_t w = H5Tget_size(type.get());
    std::vector<char> buf;
    for (size_t b = 0; b < n; b += batch) {
      const size_t m = std::min(batch, n - b);
      buf.assign(m * w, '\0');
      for (size_t k = 0; k < m; ++k) std::memcpy(buf.data() + k * w, ids.c_str(b + k), ids.length(b + k));
      map.append(buf.data(), m);
    }
  }
}

}  // namespace

namespace {
// One id of an item map into its fingerprint.
uint64_t fingerprint_add(uint64_t h, std::string_view id) {
  h = fnv1a64(id.data(), id.size(), h);
  return fnv1a64("", 1, h);  // and its terminating NUL: ids "ab", "c" differ from "a", "bc"
}
constexpr const char* kFingerprintAttr = "item_map_fnv1a64";
}  // namespace

uint64_t item_map_fingerprint(const std::vector<std::string>& item_ids) {
  uint64_t h = kFnvBasis;
  for (size_t i = 1; i < item_ids.size(); ++i) h = fingerprint_add(h, item_ids[i]);
  return h;
}

std::string fingerprint_hex(uint64_t fingerprint) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(fingerprint));
  return buf;
}

// ---- StoreWriter ---------------------------------------------------------------------

struct StoreWriter::Impl {
  std::string path;
  std::string tmp_path;
  std::unique_ptr<AtomicOutput> out;  // the temporary and its rename
  bool with_timestamps = false;
  bool finished = false;
  ErrorPrintGuard quiet;
  Handle file;
  h5::Appender offsets, items, timestamps;
  int64_t num_users = 0;
  int64_t num_interactions = 0;
  int32_t max_item = 0;
  std::vector<std::pair<std::string, double>> extra_attrs;
  // Buffers flushed in whole chunks; the user ids are written by finish()
  // (the map's string type depends on the longest id).
  std::vector<int64_t> buf_offsets{0};
  std::vector<int32_t> buf_items;
  std::vector<int64_t> buf_times;
  StringList user_ids;

  // Appends the whole chunks of `buf` (everything when `all`) and keeps the rest.
  template <typename T>
  static void put(h5::Appender& a, std::vector<T>& buf, bool all) {
    const size_t n = all ? buf.size() : buf.size() / kChunkElems * kChunkElems;
    a.append(buf.data(), n);
    buf.erase(buf.begin(), buf.begin() + n);
  }

  void flush(bool all) {
    put(offsets, buf_offsets, all);
    put(items, buf_items, all);
    if (with_timestamps) put(timestamps, buf_times, all);
  }

  // Every handle closed, then the temporary removed: a file left open
  // would be flushed again (and fail again) by HDF5's exit handler.
  void discard() {
    offsets.close();
    items.close();
    timestamps.close();
    file.close();
    out->discard();
  }
};

StoreWriter::StoreWriter(const std::string& path, bool with_timestamps, const std::vector<RunInput>& inputs)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.out = std::make_unique<AtomicOutput>(path, "the output", inputs,
                                         "nothing was written and an existing file is untouched; free disk space");
  m.tmp_path = m.out->temp_path();
  m.with_timestamps = with_timestamps;
  try {
    m.file = h5::create_file(m.tmp_path, path);
    hid_t f = m.file.get();
    h5::create_groups(f, m.path, {"/users", "/interactions", "/maps"});
    m.offsets = h5::Appender(f, m.path, "/users/offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, kChunkElems, true);
    m.items = h5::Appender(f, m.path, "/interactions/item", H5T_STD_I32LE, H5T_NATIVE_INT32, kChunkElems, true);
    if (with_timestamps)
      m.timestamps =
          h5::Appender(f, m.path, "/interactions/timestamp", H5T_STD_I64LE, H5T_NATIVE_INT64, kChunkElems, true);
  } catch (...) {
    m.discard();
    throw;
  }
}

StoreWriter::~StoreWriter() {
  if (impl_ && !impl_->finished) impl_->discard();
}

int StoreWriter::stale_temporaries_removed() const { return impl_->out->stale_removed(); }

void StoreWriter::add_user(std::string_view id, const int32_t* items, const int64_t* timestamps, int64_t n) {
  Impl& m = *impl_;
  SASREC_CHECK(!m.finished, "add_user after finish");
  SASREC_CHECK(n >= 0);
  if (id.empty())
    SASREC_FAIL(Input, m.path, ": user ", m.num_users, " has an empty id; every user needs a non-empty id");
  if (m.with_timestamps && n > 0) SASREC_CHECK(timestamps != nullptr, "the writer was opened with timestamps");
  for (int64_t k = 0; k < n; ++k) {
    if (items[k] < 1)
      SASREC_FAIL(Input, m.path, ": user ", m.num_users, " (", id, ") has item ", items[k], " at position ", k,
                  "; items are numbered from 1 (0 is padding)");
    m.max_item = std::max(m.max_item, items[k]);
  }
  m.buf_items.insert(m.buf_items.end(), items, items + n);
  if (m.with_timestamps) m.buf_times.insert(m.buf_times.end(), timestamps, timestamps + n);
  m.num_interactions += n;
  m.num_users += 1;
  m.buf_offsets.push_back(m.num_interactions);
  m.user_ids.add(id);
  if (m.buf_items.size() >= (4u << 20) || m.buf_offsets.size() >= (1u << 20)) m.flush(false);
}

void StoreWriter::set_attribute(const std::string& name, double value) { impl_->extra_attrs.emplace_back(name, value); }

void StoreWriter::finish(const std::vector<std::string>& item_ids) {
  if (item_ids.empty() || !item_ids[0].empty())
    SASREC_FAIL(Input, impl_->path, ": item_ids must start with the padding item \"\" at row 0");
  finish(static_cast<int64_t>(item_ids.size()) - 1, [&](int64_t i) { return item_ids[i]; });
}

void StoreWriter::finish(int64_t num_items, const std::function<std::string(int64_t)>& item_id) {
  Impl& m = *impl_;
  SASREC_CHECK(!m.finished, "finish called twice");
  try {
    if (m.max_item > num_items)
      SASREC_FAIL(Input, m.path, ": an interaction has item ", m.max_item, " but the catalog has only ", num_items,
                  " items; every item must be in 1..I");
    m.flush(true);
    hid_t f = m.file.get();
    write_string_map(f, m.path, "/maps/user_id", m.user_ids);
    m.user_ids = StringList();
    uint64_t fingerprint = kFnvBasis;
    {
      StringList ids;
      ids.add("");
      for (int64_t i = 1; i <= num_items; ++i) {
        const std::string id = item_id(i);
        if (id.empty()) SASREC_FAIL(Input, m.path, ": item ", i, " has an empty id; every item needs a non-empty id");
        ids.add(id);
        fingerprint = fingerprint_add(fingerprint, id);
      }
      write_string_map(f, m.path, "/maps/item_id", ids);
    }
    h5::write_attr(f, m.path, kFingerprintAttr, fingerprint);
    h5::write_string_attr(f, m.path, "format", kStoreFormat);
    h5::write_attr(f, m.path, "version", int32_t{kStoreVersion});
    const std::pair<const char*, int64_t> counts[] = {
        {"num_users", m.num_users}, {"num_items", num_items}, {"num_interactions", m.num_interactions}};
    for (const auto& [name, value] : counts) h5::write_attr(f, m.path, name, value);
    for (const auto& [name, value] : m.extra_attrs) h5::write_attr(f, m.path, name.c_str(), value);
    m.offsets.close();
    m.items.close();
    m.timestamps.close();
    SASREC_H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL), m.path, "flush the file");
    if (!m.file.close()) h5::fail(m.path, "close the file", __FILE__, __LINE__);
  } catch (...) {
    m.discard();
    throw;
  }
  m.out->commit();  // fsync, rename over the output, fsync of the folder
  m.finished = true;
}

// ---- write_store ----------------------------------------------------------------------

void write_store(const std::string& path, const Interactions& d) {
  auto bad = [&](const std::string& problem) {
    SASREC_FAIL(Input, "write_store(", path, "): ", problem, "; fix the data before writing");
  };
  if (d.offsets.empty() || d.offsets[0] != 0) bad("offsets must start with 0");
  const int64_t U = d.num_users();
  const int64_t N = d.num_interactions();
  for (int64_t u = 0; u < U; ++u)
    if (d.offsets[u + 1] < d.offsets[u]) bad(cat("offsets[", u + 1, "] < offsets[", u, "] (not monotone)"));
  if (d.offsets.back() != N) bad(cat("offsets end at ", d.offsets.back(), " but there are ", N, " items"));
  if (!d.timestamps.empty() && static_cast<int64_t>(d.timestamps.size()) != N)
    bad(cat(d.timestamps.size(), " timestamps for ", N, " interactions"));
  if (static_cast<int64_t>(d.user_ids.size()) != U) bad(cat(d.user_ids.size(), " user ids for ", U, " users"));
  if (d.item_ids.empty() || !d.item_ids[0].empty()) bad("item_ids[0] must be the padding item \"\"");
  const int64_t I = d.num_items();
  for (int64_t j = 0; j < N; ++j)
    if (d.items[j] < 1 || d.items[j] > I) bad(cat("items[", j, "] = ", d.items[j], " is outside 1..", I));
  for (int64_t u = 0; u < U; ++u)
    if (d.user_ids[u].empty()) bad(cat("user ", u, " has an empty id"));
  for (int64_t i = 1; i <= I; ++i)
    if (d.item_ids[i].empty()) bad(cat("item ", i, " has an empty id"));

  StoreWriter w(path, !d.timestamps.empty());
  for (int64_t u = 0; u < U; ++u) {
    int64_t b = d.offsets[u];
    w.add_user(d.user_ids[u], d.items.data() + b, d.timestamps.empty() ? nullptr : d.timestamps.data() + b,
               d.offsets[u + 1] - b);
  }
  w.finish(d.item_ids);
}

// ---- reading -------------------------------------------------------------------------------

namespace {

struct Reader {
  std::string path;
  ErrorPrintGuard quiet;
  Handle file;

  explicit Reader(const std::string& p) : path(p) {
    if (access(p.c_str(), F_OK) != 0)
      SASREC_FAIL(Input, p, ": no such file; check the path (convert your data with csv2h5 first)");
    if (access(p.c_str(), R_OK) != 0) SASREC_FAIL(Input, p, ": not readable; check its permissions");
    htri_t is = H5Fis_hdf5(p.c_str());
    if (is > 0) file = Handle(H5Fopen(p.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (is <= 0 || !file.valid())
      SASREC_FAIL(Input, p,
                  ": not an HDF5 file (or truncated); convert the data with csv2h5, or regenerate the file if a "
                  "copy was cut short");
  }

  bool exists(const std::string& name) const { return h5::exists(file.get(), name); }

  // The attribute `name` of the root group, of type class `cls` (and scalar
  // when `scalar`), or a corrupt-file error.
  Handle attr(const char* name, H5T_class_t cls, const char* what) const {
    Handle a = h5::open_attr(file.get(), name);
    if (!a.valid()) fail_corrupt(path, cat("missing attribute '", name, "'"));
    if (h5::attr_class(a.get()) != cls || (cls == H5T_INTEGER && h5::attr_elements(a.get()) != 1))
      fail_corrupt(path, cat("attribute '", name, "' is not ", what));
    return a;
  }

  int64_t int_attr(const char* name) const {
    Handle a = attr(name, H5T_INTEGER, "a scalar integer");
    int64_t v = 0;
    h5::read_attr(a.get(), path, name, H5T_NATIVE_INT64, &v);
    return v;
  }

  std::string string_attr(const char* name) const {
    Handle a = attr(name, H5T_STRING, "a string");
    return h5::read_string_attr(a.get(), path, name);
  }

  enum class Kind { Int32, Int64, String };

  // Opens dataset `name`, checks dtype and shape [expected_rows].
  Handle dataset(const std::string& name, Kind kind, int64_t expected_rows, const char* rows_from) const {
    if (!exists(name)) fail_corrupt(path, cat("missing dataset ", name));
    Handle ds(H5Dopen2(file.get(), name.c_str(), H5P_DEFAULT), H5Dclose);
    if (!ds.valid()) fail_corrupt(path, cat(name, " is not a dataset"));
    Handle t(H5Dget_type(ds.get()), H5Tclose);
    H5T_class_t cls = H5Tget_class(t.get());
    size_t size = H5Tget_size(t.get());
    bool ok = false;
    const char* want = "";
    switch (kind) {
      case Kind::Int32:
        ok = cls == H5T_INTEGER && size == 4;
        want = "32-bit integer";
        break;
      case Kind::Int64:
        ok = cls == H5T_INTEGER && size == 8;
        want = "64-bit integer";
        break;
      case Kind::String:
        ok = cls == H5T_STRING;
        want = "string";
        break;  // variable or fixed length
    }
    if (!ok) {
      const char* got = cls == H5T_INTEGER  ? "integer"
                        : cls == H5T_FLOAT  ? "float"
                        : cls == H5T_STRING ? "string"
                                            : "other";
      fail_corrupt(path, cat("dataset ", name, " has dtype ", got, " of ", size, " bytes, expected ", want));
    }
    Handle s(H5Dget_space(ds.get()), H5Sclose);
    int rank = H5Sget_simple_extent_ndims(s.get());
    hsize_t dims[1] = {0};
    if (rank != 1) fail_corrupt(path, cat("dataset ", name, " has ", rank, " dimensions, expected 1"));
    H5Sget_simple_extent_dims(s.get(), dims, nullptr);
    if (static_cast<int64_t>(dims[0]) != expected_rows)
      fail_corrupt(path,
                   cat("dataset ", name, " has ", dims[0], " rows, expected ", expected_rows, " (", rows_from, ")"));
    return ds;
  }

  void read_rows(hid_t ds, const char* name, hid_t mem_type, int64_t begin, int64_t count, void* out) const {
    if (count <= 0) return;
    h5::read_block(ds, path, name, mem_type, {static_cast<hsize_t>(begin)}, {static_cast<hsize_t>(count)}, out);
  }

  std::vector<std::string> read_strings(hid_t ds, const char* name, int64_t begin, int64_t count) const {
    return h5::read_strings(ds, path, name, begin, count);
  }

  StoreInfo info() const {
    std::string format = string_attr("format");
    if (format != kStoreFormat)
      fail_corrupt(path, cat("attribute 'format' is '", format, "', expected '", kStoreFormat, "'"));
    StoreInfo s;
    int64_t version = int_attr("version");
    if (version != kStoreVersion)
      SASREC_FAIL(Input, path, ": store version ", version, ", but this build reads version ", kStoreVersion,
                  "; regenerate the file with this build's csv2h5 or use the sasrec_ddp that wrote it");
    s.version = static_cast<int>(version);
    s.num_users = int_attr("num_users");
    s.num_items = int_attr("num_items");
    s.num_interactions = int_attr("num_interactions");
    if (s.num_users < 0 || s.num_items < 0 || s.num_interactions < 0)
      fail_corrupt(path, "a negative count in num_users/num_items/num_interactions");
    dataset("/users/offsets", Kind::Int64, s.num_users + 1, "num_users + 1");
    dataset("/interactions/item", Kind::Int32, s.num_interactions, "num_interactions");
    s.has_timestamps = exists("/interactions/timestamp");
    if (s.has_timestamps) dataset("/interactions/timestamp", Kind::Int64, s.num_interactions, "num_interactions");
    dataset("/maps/user_id", Kind::String, s.num_users, "num_users");
    dataset("/maps/item_id", Kind::String, s.num_items + 1, "num_items + 1");
    return s;
  }

  std::vector<int64_t> offsets(const StoreInfo& s) const {
    Handle ds = dataset("/users/offsets", Kind::Int64, s.num_users + 1, "num_users + 1");
    std::vector<int64_t> off(s.num_users + 1);
    read_rows(ds.get(), "/users/offsets", H5T_NATIVE_INT64, 0, s.num_users + 1, off.data());
    if (off[0] != 0) fail_corrupt(path, cat("/users/offsets[0] = ", off[0], ", expected 0"));
    for (size_t u = 1; u < off.size(); ++u)
      if (off[u] < off[u - 1])
        fail_corrupt(path, cat("/users/offsets[", u, "] = ", off[u], " is less than /users/offsets[", u - 1,
                               "] = ", off[u - 1], " (offsets must be non-decreasing)"));
    if (off.back() != s.num_interactions)
      fail_corrupt(path, cat("/users/offsets[", s.num_users, "] = ", off.back(),
                             ", expected num_interactions = ", s.num_interactions));
    return off;
  }

  // Reads /interactions/item rows [begin, end) and checks each is in 1..I.
  std::vector<int32_t> items(const StoreInfo& s, int64_t begin, int64_t end) const {
    Handle ds = dataset("/interactions/item", Kind::Int32, s.num_interactions, "num_interactions");
    std::vector<int32_t> it(end - begin);
    read_rows(ds.get(), "/interactions/item", H5T_NATIVE_INT32, begin, end - begin, it.data());
    for (size_t j = 0; j < it.size(); ++j)
      if (it[j] < 1 || it[j] > s.num_items)
        fail_corrupt(path, cat("/interactions/item[", begin + static_cast<int64_t>(j), "] = ", it[j], " is outside 1..",
                               s.num_items));
    return it;
  }
};

}  // namespace

StoreInfo read_store_info(const std::string& path) { return Reader(path).info(); }

Interactions read_store(const std::string& path) {
  Reader r(path);
  StoreInfo s = r.info();
  Interactions d;
  d.offsets = r.offsets(s);
  d.items = r.items(s, 0, s.num_interactions);
  if (s.has_timestamps) {
    Handle ds = r.dataset("/interactions/timestamp", Reader::Kind::Int64, s.num_interactions, "num_interactions");
    d.timestamps.resize(s.num_interactions);
    r.read_rows(ds.get(), "/interactions/timestamp", H5T_NATIVE_INT64, 0, s.num_interactions, d.timestamps.data());
  }
  Handle users = r.dataset("/maps/user_id", Reader::Kind::String, s.num_users, "num_users");
  d.user_ids = r.read_strings(users.get(), "/maps/user_id", 0, s.num_users);
  Handle items = r.dataset("/maps/item_id", Reader::Kind::String, s.num_items + 1, "num_items + 1");
  d.item_ids = r.read_strings(items.get(), "/maps/item_id", 0, s.num_items + 1);
  return d;
}

UserRange shard_range(const std::vector<int64_t>& offsets, int rank, int world_size) {
  SASREC_CHECK(world_size >= 1, "world_size = ", world_size);
  SASREC_CHECK(rank >= 0 && rank < world_size, "rank = ", rank, ", world_size = ", world_size);
  SASREC_CHECK(!offsets.empty(), "offsets must hold U+1 values");
  const int64_t U = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t N = offsets.back();
  // First user whose start offset >= r*N/world; rank 0 starts at 0, rank world ends at U.
  auto begin_of = [&](int r) -> int64_t {
    if (r == 0) return 0;
    if (r == world_size) return U;
    int64_t target = static_cast<int64_t>((static_cast<__int128>(r) * N) / world_size);
    return std::lower_bound(offsets.begin(), offsets.begin() + U, target) - offsets.begin();
  };
  return UserRange{begin_of(rank), begin_of(rank + 1)};
}

Shard load_shard(const std::string& path, int rank, int world_size, bool with_timestamps) {
  Reader r(path);
  StoreInfo s = r.info();
  if (with_timestamps && !s.has_timestamps)
    SASREC_FAIL(Input, path,
                ": data.split is time, but this store has no /interactions/timestamp (it was "
                "converted from a log without times, e.g. a seq or pairs file); convert a log with a time column "
                "(csv2h5 --time-col NAME) or use data.split: leave_one_out");
  std::vector<int64_t> off = r.offsets(s);
  Shard shard;
  shard.users = shard_range(off, rank, world_size);
  shard.num_items = s.num_items;
  shard.num_users_total = s.num_users;
  const int64_t b = off[shard.users.begin], e = off[shard.users.end];
  shard.items = r.items(s, b, e);
  if (with_timestamps) {
    Handle ds = r.dataset("/interactions/timestamp", Reader::Kind::Int64, s.num_interactions, "num_interactions");
    shard.timestamps.resize(e - b);
    r.read_rows(ds.get(), "/interactions/timestamp", H5T_NATIVE_INT64, b, e - b, shard.timestamps.data());
  }
  shard.offsets.resize(shard.users.size() + 1);
  for (int64_t u = 0; u <= shard.users.size(); ++u) shard.offsets[u] = off[shard.users.begin + u] - b;
  return shard;
}

std::vector<std::string> read_item_ids(const std::string& path) {
  Reader r(path);
  StoreInfo s = r.info();
  Handle ds = r.dataset("/maps/item_id", Reader::Kind::String, s.num_items + 1, "num_items + 1");
  return r.read_strings(ds.get(), "/maps/item_id", 0, s.num_items + 1);
}

uint64_t read_item_map_fingerprint(const std::string& path) {
  Reader r(path);
  r.info();
  if (Handle a = h5::open_attr(r.file.get(), kFingerprintAttr); a.valid()) {
    uint64_t v = 0;
    h5::read_attr(a.get(), path, kFingerprintAttr, H5T_NATIVE_UINT64, &v);
    return v;
  }
  return item_map_fingerprint(read_item_ids(path));  // a store written before the attribute
}

}  // namespace sasrec
