// h5_read.h: what the tests read back from HDF5 files they did not write
// themselves (exports), with the plain C API rather than the code under test.
#pragma once

#include <gtest/gtest.h>
#include <hdf5.h>
#include <torch/torch.h>

#include <string>
#include <vector>

namespace sasrec::test {

// A 1-d dataset of variable-length UTF-8 strings.
inline std::vector<std::string> read_h5_strings(hid_t file, const char* name) {
  hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
  hid_t space = H5Dget_space(ds);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  std::vector<char*> raw(n, nullptr);
  EXPECT_GE(H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw.data()), 0) << name;
  std::vector<std::string> out;
  for (char* r : raw) out.push_back(r ? r : "<null>");
  H5Dvlen_reclaim(type, space, H5P_DEFAULT, raw.data());
  H5Tclose(type), H5Sclose(space), H5Dclose(ds);
  return out;
}

// A 2-d float32 dataset.
inline torch::Tensor read_h5_matrix(hid_t file, const char* name) {
  hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
  hid_t space = H5Dget_space(ds);
  hsize_t dims[2] = {0, 0};
  EXPECT_EQ(H5Sget_simple_extent_ndims(space), 2);
  H5Sget_simple_extent_dims(space, dims, nullptr);
  auto t = torch::empty({static_cast<int64_t>(dims[0]), static_cast<int64_t>(dims[1])}, torch::kFloat32);
  EXPECT_GE(H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr<float>()), 0);
  H5Sclose(space), H5Dclose(ds);
  return t;
}

}  // namespace sasrec::test
