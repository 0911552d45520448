// h5.cpp: the HDF5 layer (see h5.h): HDF5 kept quiet, its failures turned
// into one line, and the handle, attribute, string and row-block helpers
// shared by the store (store.cpp) and the export (serve.cpp). No file
// layout lives here.
#include "sasrec/h5.h"

#include <algorithm>
#include <cstring>
#include <initializer_list>

#include "sasrec/store.h"

namespace sasrec {

void silence_hdf5_errors() {
  static const bool once = [] {
    // Before the library starts: no exit handler, which would flush a file
    // whose close failed (a full disk) again and crash in it (exit 139 after
    // pages of HDF5-DIAG). Every file of ours is closed explicitly.
    H5dont_atexit();
    return true;
  }();
  (void)once;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
}

namespace h5 {

using detail::cat;

std::string error_reason() {
  // The deepest entry of the stack says what failed; a system call's errno
  // is quoted there as "error message = '...'".
  std::string deepest;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_DOWNWARD,
      [](unsigned, const H5E_error2_t* e, void* data) -> herr_t {
        if (e->desc && *e->desc) *static_cast<std::string*>(data) = e->desc;
        return 0;
      },
      &deepest);
  const std::string key = "error message = '";
  const size_t at = deepest.find(key);
  if (at != std::string::npos) {
    const size_t end = deepest.find('\'', at + key.size());
    return deepest.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
  }
  return deepest.substr(0, 200);
}

void fail(const std::string& path, const std::string& what, const char* file, int line) {
  const std::string reason = error_reason();  // before anything else touches HDF5's error stack
  throw Error(ErrorDomain::Hdf5,
              cat(path, ": HDF5 failed to ", what, reason.empty() ? "" : " (", reason, reason.empty() ? "" : ")",
                  "; check free disk space and permissions"),
              file, line);
}

// ---- files, groups, types --------------------------------------------------------------

Handle create_file(const std::string& file, const std::string& path) {
  Handle f(H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  SASREC_H5_CHECK(f.get(), path, "create the file ", file);
  return f;
}

void create_groups(hid_t loc, const std::string& path, std::initializer_list<const char*> names) {
  for (const char* g : names) {
    Handle group(H5Gcreate2(loc, g, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    SASREC_H5_CHECK(group.get(), path, "create group ", g);
  }
}

bool exists(hid_t loc, const std::string& name) {
  size_t pos = 0;
  while (true) {
    pos = name.find('/', pos + 1);
    const std::string prefix = name.substr(0, pos);
    if (H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (pos == std::string::npos) return true;
  }
}

Handle vlen_string_type() {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  return t;
}

Handle fixed_string_type(size_t bytes, H5T_str_t pad, H5T_cset_t cset) {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(t.get(), bytes);
  H5Tset_strpad(t.get(), pad);
  H5Tset_cset(t.get(), cset);
  return t;
}

// ---- attributes ------------------------------------------------------------------------

void write_attr(hid_t loc, const std::string& path, const char* name, hid_t file_type, hid_t mem_type,
                const void* value) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
  Handle attr(H5Acreate2(loc, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  SASREC_H5_CHECK(attr.get(), path, "create attribute ", name);
  SASREC_H5_CHECK(H5Awrite(attr.get(), mem_type, value), path, "write attribute ", name);
}

void write_attr(hid_t loc, const std::string& path, const char* name, int32_t value) {
  write_attr(loc, path, name, H5T_STD_I32LE, H5T_NATIVE_INT32, &value);
}
void write_attr(hid_t loc, const std::string& path, const char* name, int64_t value) {
  write_attr(loc, path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}
void write_attr(hid_t loc, const std::string& path, const char* name, uint64_t value) {
  write_attr(loc, path, name, H5T_STD_U64LE, H5T_NATIVE_UINT64, &value);
}
void write_attr(hid_t loc, const std::string& path, const char* name, double value) {
  write_attr(loc, path, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

void write_string_attr(hid_t loc, const std::string& path, const char* name, const std::string& value) {
  Handle type = fixed_string_type(value.size() + 1, H5T_STR_NULLTERM, H5T_CSET_ASCII);
  write_attr(loc, path, name, type.get(), type.get(), value.c_str());
}

Handle open_attr(hid_t loc, const char* name) {
  if (H5Aexists(loc, name) <= 0) return Handle();
  return Handle(H5Aopen(loc, name, H5P_DEFAULT), H5Aclose);
}

H5T_class_t attr_class(hid_t attr) {
  Handle t(H5Aget_type(attr), H5Tclose);
  return H5Tget_class(t.get());
}

int64_t attr_elements(hid_t attr) {
  Handle s(H5Aget_space(attr), H5Sclose);
  return H5Sget_simple_extent_npoints(s.get());
}

void read_attr(hid_t attr, const std::string& path, const char* name, hid_t mem_type, void* value) {
  SASREC_H5_CHECK(H5Aread(attr, mem_type, value), path, "read attribute ", name);
}

std::string read_string_attr(hid_t attr, const std::string& path, const char* name) {
  Handle t(H5Aget_type(attr), H5Tclose);
  if (H5Tis_variable_str(t.get()) > 0) {
    Handle mt = vlen_string_type();
    char* s = nullptr;
    read_attr(attr, path, name, mt.get(), &s);
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  std::string buf(H5Tget_size(t.get()), '\0');
  read_attr(attr, path, name, t.get(), buf.data());
  buf.resize(std::strlen(buf.c_str()));
  return buf;
}

// ---- datasets ------------------------------------------------------------------------------

Handle create_dataset(hid_t loc, const std::string& path, const char* name, hid_t file_type,
                      const std::vector<hsize_t>& dims) {
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Handle ds(H5Dcreate2(loc, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  SASREC_H5_CHECK(ds.get(), path, "create dataset ", name);
  return ds;
}

namespace {

// The block [start, start + count) of `ds` selected in its file space.
Handle select_block(hid_t ds, const std::string& path, const std::string& name, const std::vector<hsize_t>& start,
                    const std::vector<hsize_t>& count) {
  Handle space(H5Dget_space(ds), H5Sclose);
  SASREC_H5_CHECK(H5Sselect_hyperslab(space.get(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr), path,
                  "select rows of ", name);
  return space;
}

bool is_empty(const std::vector<hsize_t>& count) {
  return std::any_of(count.begin(), count.end(), [](hsize_t n) { return n == 0; });
}

}  // namespace

void write_block(hid_t ds, const std::string& path, const std::string& name, hid_t mem_type,
                 const std::vector<hsize_t>& start, const std::vector<hsize_t>& count, const void* data) {
  if (is_empty(count)) return;
  Handle file_space = select_block(ds, path, name, start, count);
  Handle mem_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose);
  SASREC_H5_CHECK(H5Dwrite(ds, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data), path, "write ", name);
}

void read_block(hid_t ds, const std::string& path, const std::string& name, hid_t mem_type,
                const std::vector<hsize_t>& start, const std::vector<hsize_t>& count, void* data) {
  if (is_empty(count)) return;
  Handle file_space = select_block(ds, path, name, start, count);
  Handle mem_space(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), H5Sclose);
  SASREC_H5_CHECK(H5Dread(ds, mem_type, mem_space.get(), file_space.get(), H5P_DEFAULT, data), path, "read ", name);
}

std::vector<std::string> read_strings(hid_t ds, const std::string& path, const std::string& name, int64_t begin,
                                      int64_t count) {
  std::vector<std::string> out;
  out.reserve(count);
  const int64_t batch = 1 << 18;
  Handle ft(H5Dget_type(ds), H5Tclose);
  if (H5Tis_variable_str(ft.get()) <= 0) {
    Handle mt(H5Tcopy(ft.get()), H5Tclose);
    H5Tset_strpad(mt.get(), H5T_STR_NULLPAD);
    const size_t w = H5Tget_size(mt.get());
    std::vector<char> buf;
    for (int64_t b = begin; b < begin + count; b += batch) {
      const int64_t n = std::min(batch, begin + count - b);
      buf.assign(n * w, '\0');
      read_block(ds, path, name, mt.get(), {static_cast<hsize_t>(b)}, {static_cast<hsize_t>(n)}, buf.data());
      for (int64_t k = 0; k < n; ++k) out.emplace_back(buf.data() + k * w, strnlen(buf.data() + k * w, w));
    }
    return out;
  }
  Handle mt = vlen_string_type();
  std::vector<char*> ptrs;
  for (int64_t b = begin; b < begin + count; b += batch) {
    const int64_t n = std::min(batch, begin + count - b);
    ptrs.assign(n, nullptr);
    const hsize_t rows[1] = {static_cast<hsize_t>(n)};
    read_block(ds, path, name, mt.get(), {static_cast<hsize_t>(b)}, {rows[0]}, ptrs.data());
    for (char* p : ptrs) out.emplace_back(p ? p : "");
    Handle mspace(H5Screate_simple(1, rows, nullptr), H5Sclose);
    H5Dvlen_reclaim(mt.get(), mspace.get(), H5P_DEFAULT, ptrs.data());
  }
  return out;
}

void write_strings(hid_t loc, const std::string& path, const char* name, const std::vector<std::string>& values,
                   size_t first) {
  Handle type = vlen_string_type();
  std::vector<const char*> ptrs;
  for (size_t i = first; i < values.size(); ++i) ptrs.push_back(values[i].c_str());
  const hsize_t n = ptrs.size();
  Handle ds = create_dataset(loc, path, name, type.get(), {n});
  if (n > 0)
    SASREC_H5_CHECK(H5Dwrite(ds.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), path, "write ", name);
}

Appender::Appender(hid_t loc, const std::string& path, const char* name, hid_t file_type, hid_t mem_type, hsize_t chunk,
                   bool uncached)
    : path_(path), name_(name), mem_type_(mem_type) {
  const hsize_t dims[1] = {0};
  const hsize_t maxdims[1] = {H5S_UNLIMITED};
  Handle space(H5Screate_simple(1, dims, maxdims), H5Sclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  const hsize_t chunk_dims[1] = {chunk};
  SASREC_H5_CHECK(H5Pset_chunk(dcpl.get(), 1, chunk_dims), path_, "set the chunking of ", name_);
  Handle dapl(H5Pcreate(H5P_DATASET_ACCESS), H5Pclose);
  if (uncached) SASREC_H5_CHECK(H5Pset_chunk_cache(dapl.get(), 0, 0, 1.0), path_, "set the chunk cache of ", name_);
  ds_ = Handle(H5Dcreate2(loc, name, file_type, space.get(), H5P_DEFAULT, dcpl.get(), dapl.get()), H5Dclose);
  SASREC_H5_CHECK(ds_.get(), path_, "create dataset ", name_);
}

void Appender::append(const void* data, hsize_t n) {
  if (n == 0) return;
  const hsize_t new_size[1] = {size_ + n};
  SASREC_H5_CHECK(H5Dset_extent(ds_.get(), new_size), path_, "extend ", name_);
  write_block(ds_.get(), path_, name_, mem_type_, {size_}, {n}, data);
  size_ += n;
}

}  // namespace h5
}  // namespace sasrec
