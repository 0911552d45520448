// test_gpu.cpp: the CUDA path against the CPU one, and the NCCL backend with
// one rank. Every test skips where there is no CUDA device (or no NCCL in
// this build).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sasrec/comm.h"
#include "sasrec/error.h"
#include "sasrec/model.h"

using namespace sasrec;

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

TEST(Gpu, CudaForwardMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  torch::manual_seed(1);
  SASRecOptions o;
  o.num_items = 500;
  o.hidden = 32;
  o.heads = 2;
  o.maxlen = 20;
  SASRec model(o);
  model->eval();
  auto seq = torch::randint(1, 501, {16, 20}, torch::kInt64);
  seq.slice(1, 0, 7).zero_();  // left padding
  auto cpu = model->forward(seq);
  model->to(torch::kCUDA);
  auto gpu = model->forward(seq.to(torch::kCUDA)).cpu();
  const double diff = (cpu - gpu).abs().max().item<double>();
  EXPECT_LT(diff, 1e-4) << "largest CPU/CUDA difference";
}

TEST(Gpu, NcclOneRankCollectives) {
  SKIP_WITHOUT_CUDA();
  std::unique_ptr<Communicator> comm;
  try {
    comm = make_nccl_communicator(make_mpi_communicator(), 0);
  } catch (const sasrec::Error& e) {
    GTEST_SKIP() << e.what();
  }
  auto t = torch::arange(6, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kCUDA));
  comm->allreduce_sum(t);  // one rank: unchanged
  EXPECT_TRUE(torch::equal(t.cpu(), torch::arange(6, torch::kFloat32)));
  comm->broadcast(t, 0);
  EXPECT_TRUE(torch::equal(t.cpu(), torch::arange(6, torch::kFloat32)));
  auto g = comm->allgather(t.view({3, 2}));
  EXPECT_EQ(g.size(0), 3);
  auto host = torch::ones({2}, torch::kFloat64);  // CPU tensors take the MPI path
  comm->allreduce_sum(host);
  EXPECT_EQ(host.sum().item<double>(), 2.0);
}
