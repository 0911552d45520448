// test_main.cpp: the gtest entry point shared by every test binary. Tests of
// the trainer library run with one intra-op thread, as sasrec_ddp's main()
// would set from train.threads: the suite shares the machine's cores, and
// the runs a test compares are then computed alike.
#include <gtest/gtest.h>

#ifdef SASREC_TEST_TORCH
#include <torch/torch.h>
#endif

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
#ifdef SASREC_TEST_TORCH
  torch::set_num_threads(1);
#endif
  return RUN_ALL_TESTS();
}
