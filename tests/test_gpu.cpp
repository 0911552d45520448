// test_gpu.cpp: the CUDA path against the CPU one, the NCCL backend with one
// rank, device selection and the memory plan's device memory (label gpu).
// Without a CUDA device the whole binary prints one line and reports itself
// skipped (exit 77, ctest's SKIP_RETURN_CODE); the CPU-testable parts of
// the CUDA features (SDPA and tensor attention, bf16 autocast, staging,
// graph buckets and padding, the tensor scorer) are tested on the CPU in
// test_model.cpp, test_item_rows.cpp and test_serve.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "sasrec/comm.h"
#include "sasrec/error.h"
#include "sasrec/loss.h"
#include "sasrec/memory_plan.h"
#include "sasrec/model.h"
#include "sasrec/step_graph.h"
#include "sasrec/torch_compat.h"
#include "sasrec/device.h"
#include "sasrec/trainer.h"

using namespace sasrec;

namespace {

SASRecOptions small_options(AttentionKernel kernel, Precision precision = Precision::Fp32) {
  SASRecOptions o;
  o.num_items = 500;
  o.hidden = 32;
  o.heads = 2;
  o.maxlen = 20;
  o.dropout = 0;
  o.attention = kernel;
  o.precision = precision;
  return o;
}

torch::Tensor left_padded_batch() {
  auto seq = torch::randint(1, 501, {16, 20}, torch::kInt64);
  for (int64_t b = 0; b < 16; ++b) seq[b].slice(0, 0, b).zero_();  // lengths 20 .. 5
  return seq;
}

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kCPU, torch::kFloat64) - b.to(torch::kCPU, torch::kFloat64)).norm() /
          b.to(torch::kFloat64).norm().clamp_min(1e-30))
      .item<double>();
}

TEST(Gpu, CudaForwardMatchesCpuForEveryKernel) {
  torch::manual_seed(1);
  SASRec cpu(small_options(AttentionKernel::Fused));
  cpu->eval();
  auto seq = left_padded_batch();
  auto want = cpu->forward(seq);
  std::vector<AttentionKernel> kernels{AttentionKernel::Tensor, AttentionKernel::Auto};
  if (compat::kHasSdpa) kernels.push_back(AttentionKernel::Sdpa);
  for (AttentionKernel kernel : kernels) {
    SASRec gpu(small_options(kernel));
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < gpu->parameters().size(); ++i) gpu->parameters()[i].copy_(cpu->parameters()[i]);
    gpu->to(torch::kCUDA);
    gpu->eval();
    EXPECT_LT(rel(gpu->forward(seq.to(torch::kCUDA)), want), 1e-5) << attention_name(kernel);
  }
}

TEST(Gpu, Bf16AutocastStaysNearFp32WithFp32Parameters) {
  torch::manual_seed(2);
  SASRec fp32(small_options(AttentionKernel::Auto));
  SASRec bf16(small_options(AttentionKernel::Auto, Precision::Bf16));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < bf16->parameters().size(); ++i) bf16->parameters()[i].copy_(fp32->parameters()[i]);
  fp32->to(torch::kCUDA), bf16->to(torch::kCUDA);
  fp32->eval(), bf16->eval();
  auto seq = left_padded_batch().to(torch::kCUDA);
  auto out = bf16->forward(seq);
  EXPECT_EQ(out.scalar_type(), torch::kFloat32);
  EXPECT_LT(rel(out, fp32->forward(seq)), 3e-2);
  for (const auto& p : bf16->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat32);
}

TEST(Gpu, OneTrainingStepMatchesCpu) {
  // The same loss and gradients from the CPU model (fused kernel) and the CUDA one (auto: SDPA or tensor ops).
  torch::manual_seed(3);
  SASRec cpu(small_options(AttentionKernel::Fused)), gpu(small_options(AttentionKernel::Auto));
  {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < gpu->parameters().size(); ++i) gpu->parameters()[i].copy_(cpu->parameters()[i]);
  }
  gpu->to(torch::kCUDA);
  auto seq = left_padded_batch();
  const Packing packing = pack_sequences(seq, 20);
  auto pos = torch::randint(1, 501, {packing.items.size(0)}, torch::kInt64);
  auto neg = torch::randint(1, 501, {packing.items.size(0)}, torch::kInt64);
  auto loss = [&](SASRec& m, torch::Device d) {
    Packing p = packing;
    for (auto* t : {&p.items, &p.positions, &p.index, &p.sequence}) *t = t->to(d);
    auto h = m->forward_packed(p);
    return loss_sum_rows(LossKind::Bce, h, m->item_weight(), pos.to(d), neg.to(d), {});
  };
  auto lc = loss(cpu, torch::kCPU), lg = loss(gpu, torch::kCUDA);
  lc.backward(), lg.backward();
  EXPECT_LT(rel(lg, lc), 1e-5);
  for (size_t i = 0; i < cpu->parameters().size(); ++i)
    EXPECT_LT(rel(gpu->parameters()[i].grad(), cpu->parameters()[i].grad()), 1e-4) << cpu->named_parameters()[i].key();
}

TEST(Gpu, CapturedStepReplaysTheEagerGradients) {
  torch::manual_seed(4);
  SASRec model(small_options(AttentionKernel::Auto));
  model->to(torch::kCUDA);
  auto seq = left_padded_batch();
  Batch batch;
  batch.seq = seq;
  batch.pos = torch::where(seq > 0, torch::randint(1, 501, seq.sizes(), torch::kInt64), torch::zeros_like(seq));
  batch.neg = torch::where(seq > 0, torch::randint(1, 501, seq.sizes(), torch::kInt64), torch::zeros_like(seq));
  batch.users = torch::arange(16, torch::kInt64);
  const StepInputs host = stage_inputs(batch, 20, /*pin=*/false);
  auto body = [&](const StepInputs& in, const torch::Tensor& w) {
    return loss_sum_rows(LossKind::Bce, model->forward_packed(in.packing, in.users), model->item_weight(), in.pos,
                         in.neg, {}, {}, w);
  };
  // Eager, on the unpadded inputs.
  const StepInputs dev = host.to(torch::kCUDA);
  auto eager = body(dev, {});
  (eager * 0.5).backward();
  std::vector<torch::Tensor> want;
  for (auto& p : model->parameters()) want.push_back(p.grad().clone());
  const auto buckets = token_buckets(16 * 20);
  StepGraph graph(model->parameters(), body);
  const PaddedInputs padded =
      pad_inputs(host, bucket_for(buckets, host.pos.size(0)), padded_batch(buckets, 16, 20), 20);
  for (int replay = 0; replay < 2; ++replay) {
    auto loss = graph.run(padded, 0.5);
    EXPECT_LT(rel(loss, eager), 1e-5) << "replay " << replay;
    for (size_t i = 0; i < want.size(); ++i) EXPECT_LT(rel(model->parameters()[i].grad(), want[i]), 1e-4);
  }
  EXPECT_EQ(graph.captured(), 1);
}

TEST(Gpu, NcclOneRankCollectives) {
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
  EXPECT_TRUE(torch::equal(g.cpu(), torch::arange(6, torch::kFloat32).view({3, 2})));
  std::vector<int64_t> recv;
  auto a = comm->alltoall(t.view({3, 2}), {3}, recv);  // the grouped send/recv, to itself
  EXPECT_TRUE(torch::equal(a.cpu(), torch::arange(6, torch::kFloat32).view({3, 2})));
  EXPECT_EQ(recv, std::vector<int64_t>{3});
  auto host = torch::ones({2}, torch::kFloat64);  // CPU tensors take the MPI path
  comm->allreduce_sum(host);
  EXPECT_EQ(host.sum().item<double>(), 2.0);
}

TEST(Gpu, DeviceByLocalRankAndFreeMemory) {
  const int n = static_cast<int>(torch::cuda::device_count());
  EXPECT_EQ(resolve_device(DeviceKind::Auto, 0), torch::Device(torch::kCUDA, 0));
  EXPECT_EQ(resolve_device(DeviceKind::Cuda, n), torch::Device(torch::kCUDA, 0));  // local rank n wraps around
  EXPECT_EQ(resolve_device(DeviceKind::Cpu, 0), torch::Device(torch::kCPU));
  const int64_t free = available_memory(torch::Device(torch::kCUDA, 0));
  EXPECT_GT(free, int64_t{1} << 30) << "free memory of cuda:0";
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  if (!torch::cuda::is_available()) {
    std::printf("test_gpu: skipped: no CUDA device on this machine (built with libtorch %s)\n",
                compat::torch_version());
    return 77;
  }
  return RUN_ALL_TESTS();
}
