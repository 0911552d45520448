// test_main.cpp: the gtest entry point shared by every test binary. Tests of
// the trainer library run with one intra-op thread, as sasrec_ddp's main()
// would set from train.threads: the suite shares the machine's cores, and
// the runs a test compares are then computed alike. Their BLAS kernels are
// mended as sasrec_ddp's are (blas_kernels.h).
#include <gtest/gtest.h>

#ifdef SASREC_TEST_TORCH
#include <torch/torch.h>

#include "sasrec/blas_kernels.h"
#endif

int main(int argc, char** argv) {
#ifdef SASREC_TEST_TORCH
  sasrec::restart_with_better_blas(argv, /*quiet=*/true);  // the programs the tests start inherit the kernels
#endif
  ::testing::InitGoogleTest(&argc, argv);
#ifdef SASREC_TEST_TORCH
  torch::set_num_threads(1);
#endif
  return RUN_ALL_TESTS();
}
