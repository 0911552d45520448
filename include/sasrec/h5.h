// h5.h: the one HDF5 layer of sasrec-ddp, over the HDF5 C API.
//
// Owns: the handle that closes an HDF5 id (Handle), the one check of an
// HDF5 call (SASREC_H5_CHECK: a failure becomes one sasrec::Error(Hdf5)
// line "PATH: HDF5 failed to WHAT (REASON); check free disk space and
// permissions", REASON read from HDF5's error stack), and the small
// mechanisms the store and the export share: string types, scalar and
// string attributes, groups, blocks of rows of 1-D and 2-D datasets,
// extendable datasets appended in order, string datasets.
//
// It does not own a file layout (store.h and serve.h say what goes where),
// the validation of a file read (the store's), nor the atomic replacement
// of a file (atomic_file.h). HDF5 prints nothing while we run:
// silence_hdf5_errors() (declared in store.h, where every binary finds it)
// is defined here and called by every reader and writer.
#pragma once

#include <hdf5.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "sasrec/error.h"

namespace sasrec::h5 {

// Owns one hid_t and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)), closer_(o.closer_) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
      closer_ = o.closer_;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = H5I_INVALID_HID;
  }
  // Closes now; false when the close failed (a file's close flushes it: a
  // full disk fails here). Never closes twice: after a failed close HDF5
  // keeps a file open and a second close crashes it.
  bool close() {
    if (id_ < 0 || !closer_) return true;
    return closer_(std::exchange(id_, H5I_INVALID_HID)) >= 0;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// The reason of the last failed HDF5 call in a few words ("No space left on
// device", "File too large", ...), or "".
std::string error_reason();

// Throws Error(Hdf5) "PATH: HDF5 failed to WHAT (REASON); check free disk
// space and permissions". `path` names the file as the user knows it (a
// writer's temporary is its own business).
[[noreturn]] void fail(const std::string& path, const std::string& what, const char* file, int line);

}  // namespace sasrec::h5

// The one check of an HDF5 call: a negative result (an herr_t, or a hid_t
// that is not valid) throws h5::fail(path, WHAT) with WHAT built from the
// streamed parts: SASREC_H5_CHECK(H5Dwrite(...), path, "write ", name).
#define SASREC_H5_CHECK(expr, path, ...)                                                                \
  do {                                                                                                  \
    if ((expr) < 0) ::sasrec::h5::fail((path), ::sasrec::detail::cat(__VA_ARGS__), __FILE__, __LINE__); \
  } while (0)

namespace sasrec::h5 {

// ---- files, groups, types --------------------------------------------------------------

// Creates (truncates) `file`; checked. `path` as in fail().
Handle create_file(const std::string& file, const std::string& path);
// Creates each group under `loc` (names as "users" or "/a/b"); checked.
void create_groups(hid_t loc, const std::string& path, std::initializer_list<const char*> names);
// Whether the link `name` ("/a/b/c") exists, checking each component (H5Lexists
// fails on a missing intermediate group).
bool exists(hid_t loc, const std::string& name);

// Variable-length UTF-8 strings.
Handle vlen_string_type();
// Fixed-length strings of `bytes` bytes.
Handle fixed_string_type(size_t bytes, H5T_str_t pad, H5T_cset_t cset);

// ---- attributes ------------------------------------------------------------------------

// A scalar attribute `name` on `loc` (an existing one replaced), of
// `file_type`, from `value` in `mem_type`.
void write_attr(hid_t loc, const std::string& path, const char* name, hid_t file_type, hid_t mem_type,
                const void* value);
// The same in the little-endian file type of the value's C++ type.
void write_attr(hid_t loc, const std::string& path, const char* name, int32_t value);
void write_attr(hid_t loc, const std::string& path, const char* name, int64_t value);
void write_attr(hid_t loc, const std::string& path, const char* name, uint64_t value);
void write_attr(hid_t loc, const std::string& path, const char* name, double value);
// A NUL-terminated fixed-length ASCII string attribute.
void write_string_attr(hid_t loc, const std::string& path, const char* name, const std::string& value);

// The attribute `name` of `loc`; not valid() when there is none.
Handle open_attr(hid_t loc, const char* name);
// Its type class and its number of elements.
H5T_class_t attr_class(hid_t attr);
int64_t attr_elements(hid_t attr);
// Reads it into `value` as `mem_type`; checked.
void read_attr(hid_t attr, const std::string& path, const char* name, hid_t mem_type, void* value);
// A string attribute, variable or fixed length (up to its first NUL).
std::string read_string_attr(hid_t attr, const std::string& path, const char* name);

// ---- datasets ------------------------------------------------------------------------------

// A contiguous dataset of the given shape; checked.
Handle create_dataset(hid_t loc, const std::string& path, const char* name, hid_t file_type,
                      const std::vector<hsize_t>& dims);
// Writes / reads the block [start, start + count) of a dataset of rank
// start.size() from / into `data` (count elements of `mem_type`, C order).
// Empty blocks do nothing. Checked; `name` says which dataset.
void write_block(hid_t ds, const std::string& path, const std::string& name, hid_t mem_type,
                 const std::vector<hsize_t>& start, const std::vector<hsize_t>& count, const void* data);
void read_block(hid_t ds, const std::string& path, const std::string& name, hid_t mem_type,
                const std::vector<hsize_t>& start, const std::vector<hsize_t>& count, void* data);
// Rows [begin, begin + count) of a 1-D string dataset (variable or NUL-padded fixed length).
std::vector<std::string> read_strings(hid_t ds, const std::string& path, const std::string& name, int64_t begin,
                                      int64_t count);
// values[first..] as the contiguous 1-D dataset `name` of variable-length UTF-8 strings.
void write_strings(hid_t loc, const std::string& path, const char* name, const std::vector<std::string>& values,
                   size_t first = 0);

// An extendable 1-D chunked dataset, appended to in order.
class Appender {
 public:
  Appender() = default;
  // uncached: no chunk cache, so whole chunks go straight from the caller's
  // buffer to the file (the caller then appends whole chunks).
  Appender(hid_t loc, const std::string& path, const char* name, hid_t file_type, hid_t mem_type, hsize_t chunk,
           bool uncached = false);

  void append(const void* data, hsize_t n);
  void close() { ds_.reset(); }
  hsize_t size() const { return size_; }

 private:
  Handle ds_;
  std::string path_;
  std::string name_;
  hid_t mem_type_ = H5I_INVALID_HID;
  hsize_t size_ = 0;
};

}  // namespace sasrec::h5
