// test_device_paths.cpp: the parts of the CUDA features that run on the CPU,
// tested here against the CPU paths they must equal (label unit; on a GPU,
// test_gpu.cpp runs the same functions on CUDA tensors):
//   runtime.attention  fused kernel = tensor ops = SDPA (libtorch 2.x), forward and gradients
//   runtime.precision  bf16 autocast near fp32, parameters and output fp32
//   staging            stage_inputs: one buffer, the values of the per-tensor path
//   runtime.cuda_graphs token buckets; a padded step gives the unpadded loss and gradients
//   eval.scorer        the tensor scorer (the device path) ranks and recommends as the blocked CPU one
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/dataset.h"
#include "sasrec/evaluator.h"
#include "sasrec/loss.h"
#include "sasrec/model.h"
#include "sasrec/sampler.h"
#include "sasrec/serve.h"
#include "sasrec/step_graph.h"
#include "sasrec/torch_compat.h"
#include "test_util.h"

using namespace sasrec;

namespace {

SASRecOptions options(AttentionKernel kernel, Norm norm = Norm::Pre, Precision precision = Precision::Fp32) {
  SASRecOptions o;
  o.num_items = 40;
  o.num_users = 6;
  o.hidden = 12;
  o.heads = 3;
  o.maxlen = 8;
  o.dropout = 0;
  o.norm = norm;
  o.attention = kernel;
  o.precision = precision;
  return o;
}

// Copies a's parameters into b (same options but the kernel).
void copy_parameters(SASRec& from, SASRec& to) {
  torch::NoGradGuard no_grad;
  auto src = from->parameters(), dst = to->parameters();
  ASSERT_EQ(src.size(), dst.size());
  for (size_t i = 0; i < src.size(); ++i) dst[i].copy_(src[i]);
}

// A left-padded batch with lengths 8, 5, 1, 3 (one row with a single item).
torch::Tensor batch_seq() {
  return torch::tensor(
      {{3, 9, 14, 2, 7, 30, 11, 5}, {0, 0, 0, 4, 8, 15, 16, 23}, {0, 0, 0, 0, 0, 0, 0, 39}, {0, 0, 0, 0, 0, 12, 1, 6}},
      torch::kInt64);
}

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a.to(torch::kFloat64) - b.to(torch::kFloat64)).norm() / b.to(torch::kFloat64).norm().clamp_min(1e-30))
      .item<double>();
}

// Loss sum and every gradient of a bce step with fixed targets.
std::pair<torch::Tensor, std::vector<torch::Tensor>> bce_step(SASRec& m, const torch::Tensor& seq) {
  const Packing p = pack_sequences(seq, m->options().maxlen);
  const int64_t n = p.items.size(0);
  auto pos = (p.items * 7) % 40 + 1, neg = (p.items * 3) % 40 + 1;
  for (auto& q : m->parameters()) q.mutable_grad().reset();
  auto loss = loss_sum_rows(LossKind::Bce, m->forward_packed(p), m->item_weight(), pos, neg, {});
  loss.backward();
  std::vector<torch::Tensor> grads;
  for (auto& q : m->parameters()) grads.push_back(q.grad().clone());
  EXPECT_EQ(n, 17);
  return {loss.detach(), grads};
}

class Kernels : public ::testing::TestWithParam<Norm> {};

TEST_P(Kernels, TensorAndSdpaEqualTheFusedKernel) {
  torch::manual_seed(11);
  SASRec fused(options(AttentionKernel::Fused, GetParam()));
  auto [want_loss, want_grads] = bce_step(fused, batch_seq());
  std::vector<AttentionKernel> others{AttentionKernel::Tensor};
  if (compat::kHasSdpa) others.push_back(AttentionKernel::Sdpa);
  for (AttentionKernel kernel : others) {
    SASRec m(options(kernel, GetParam()));
    copy_parameters(fused, m);
    auto [loss, grads] = bce_step(m, batch_seq());
    EXPECT_LT(rel(loss, want_loss), 1e-6) << attention_name(kernel);
    for (size_t i = 0; i < grads.size(); ++i)
      EXPECT_LT(rel(grads[i], want_grads[i]), 1e-5) << attention_name(kernel) << " " << m->named_parameters()[i].key();
  }
  if (!compat::kHasSdpa)
    std::printf("[   NOTE   ] libtorch %s has no SDPA: sdpa compared in the CUDA build\n", compat::torch_version());
}

INSTANTIATE_TEST_SUITE_P(Norms, Kernels, ::testing::Values(Norm::Pre, Norm::Post, Norm::Paper));

TEST(Kernels, AutoPicksFusedForFloat32OnTheCpu) {
  Attention a(12, 3, 0.0, false, std::make_shared<DropoutStream>(), AttentionKernel::Auto);
  EXPECT_EQ(a->kernel_for(torch::zeros({2, 12})), AttentionKernel::Fused);
  EXPECT_EQ(a->kernel_for(torch::zeros({2, 12}, torch::kBFloat16)),
            compat::kHasSdpa ? AttentionKernel::Sdpa : AttentionKernel::Tensor);
}

TEST(Precision, Bf16AutocastNearFp32WithFp32ParametersAndOutput) {
  torch::manual_seed(12);
  SASRec fp32(options(AttentionKernel::Auto)), bf16(options(AttentionKernel::Auto, Norm::Pre, Precision::Bf16));
  copy_parameters(fp32, bf16);
  fp32->eval(), bf16->eval();
  auto want = fp32->forward(batch_seq()), got = bf16->forward(batch_seq());
  EXPECT_EQ(got.scalar_type(), torch::kFloat32);
  const double err = rel(got, want);
  EXPECT_LT(err, 3e-2) << "bf16 carries 8 bits of mantissa";
  EXPECT_GT(err, 0.0) << "autocast did not act: the output equals fp32 to the bit";
  for (const auto& p : bf16->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat32);
  // Training under autocast leaves fp32 gradients.
  bf16->train();
  auto [loss, grads] = bce_step(bf16, batch_seq());
  EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
  for (const auto& g : grads) EXPECT_EQ(g.scalar_type(), torch::kFloat32);
  // The state outside is restored: a plain matmul afterwards is fp32.
  EXPECT_EQ(torch::matmul(torch::ones({2, 2}), torch::ones({2, 2})).scalar_type(), torch::kFloat32);
}

Batch make_batch(bool gbce) {
  Batch b;
  b.seq = batch_seq();
  b.pos = torch::where(b.seq > 0, (b.seq * 5) % 40 + 1, torch::zeros_like(b.seq));
  if (gbce) {
    b.neg = torch::stack({b.pos % 40 + 1, (b.pos + 7) % 40 + 1}, 2) * (b.seq > 0).unsqueeze(2);
  } else {
    b.neg = torch::where(b.seq > 0, (b.seq * 3) % 40 + 1, torch::zeros_like(b.seq));
  }
  b.shared = torch::tensor({4, 9, 9, 33}, torch::kInt64);
  b.shared_log_q = torch::tensor({-1.5f, -0.25f, -0.25f, 2.0f});
  b.users = torch::tensor({0, 3, 4, 5}, torch::kInt64);
  b.targets = 17;
  return b;
}

TEST(Staging, OneBufferHoldingThePackedInputs) {
  for (bool gbce : {false, true}) {
    const Batch b = make_batch(gbce);
    const StepInputs s = stage_inputs(b, 8, /*pin=*/false);
    const Packing p = pack_sequences(b.seq, 8);
    // The per-tensor path of the trainer before staging: pick the packed rows.
    auto pick = [&](const torch::Tensor& x) {
      auto flat = x.dim() == 3 ? x.reshape({-1, x.size(2)}) : x.reshape({-1});
      return flat.index_select(0, p.index);
    };
    EXPECT_TRUE(torch::equal(s.packing.items, p.items));
    EXPECT_TRUE(torch::equal(s.packing.positions, p.positions));
    EXPECT_TRUE(torch::equal(s.packing.index, p.index));
    EXPECT_TRUE(torch::equal(s.packing.sequence, p.sequence));
    EXPECT_TRUE(torch::equal(s.packing.offsets, p.offsets));
    EXPECT_TRUE(torch::equal(s.pos, pick(b.pos)));
    EXPECT_TRUE(torch::equal(s.neg, pick(b.neg)));
    EXPECT_TRUE(torch::equal(s.shared, b.shared));
    EXPECT_TRUE(torch::equal(s.shared_log_q, b.shared_log_q));
    EXPECT_TRUE(torch::equal(s.users, b.users));
    // Every part lies inside the one buffer, without overlap.
    const auto* base = static_cast<const uint8_t*>(s.staging.data_ptr());
    int64_t covered = 0;
    for (const torch::Tensor* t : {&s.packing.items, &s.packing.positions, &s.packing.index, &s.packing.sequence,
                                   &s.pos, &s.neg, &s.shared, &s.shared_log_q, &s.users}) {
      const auto* at = static_cast<const uint8_t*>(t->data_ptr());
      EXPECT_GE(at, base);
      EXPECT_LE(at + t->numel() * t->element_size(), base + s.staging.numel());
      covered += t->numel() * t->element_size();
    }
    EXPECT_LE(covered, s.staging.numel());
    EXPECT_GT(covered, s.staging.numel() - 9 * 8) << "only alignment padding between the parts";
    // to() the device it is on is the same tensors.
    EXPECT_EQ(s.to(torch::kCPU).pos.data_ptr(), s.pos.data_ptr());
  }
}

TEST(StepGraphBuckets, GeometricMultiplesOf64EndingAtTheMost) {
  const auto b = token_buckets(128 * 50);
  ASSERT_GE(b.size(), 2u);
  EXPECT_EQ(b.front(), 64);
  EXPECT_EQ(b.back(), 6400);
  for (size_t i = 1; i < b.size(); ++i) {
    EXPECT_GT(b[i], b[i - 1]);
    if (i + 1 < b.size()) EXPECT_EQ(b[i] % 64, 0);
    EXPECT_LE(b[i], b[i - 1] * 5 / 4 + 64) << "a bucket wastes at most a quarter plus one grain";
  }
  EXPECT_EQ(bucket_for(b, 1), 64);
  EXPECT_EQ(bucket_for(b, 64), 64);
  EXPECT_EQ(bucket_for(b, 65), b[1]);
  EXPECT_EQ(bucket_for(b, 6400), 6400);
  EXPECT_THROW(bucket_for(b, 6401), std::exception);
  EXPECT_EQ(token_buckets(10), std::vector<int64_t>{10});
  // Rows enough for the worst padding: the largest gap between buckets.
  int64_t gap = b.front() - 1;
  for (size_t i = 1; i < b.size(); ++i) gap = std::max(gap, b[i] - b[i - 1] - 1);
  EXPECT_EQ(padded_batch(b, 128, 50), 128 + (gap + 49) / 50);
}

TEST(StepGraphBuckets, PaddedStepGivesTheUnpaddedLossAndGradients) {
  for (LossKind kind : {LossKind::Bce, LossKind::Ce, LossKind::SampledSoftmax, LossKind::Gbce}) {
    torch::manual_seed(13);
    SASRecOptions o = options(AttentionKernel::Tensor);
    o.user_embedding = true;
    SASRec m(o);
    const Batch b = make_batch(kind == LossKind::Gbce);
    const StepInputs s = stage_inputs(b, 8, false);
    const SampledTerms terms = kind == LossKind::SampledSoftmax
                                   ? SampledTerms{torch::full({s.pos.size(0)}, 0.5f), s.shared_log_q, 1}
                                   : SampledTerms{{}, {}, kind == LossKind::Gbce ? 0.8 : 1.0};
    auto step = [&](const StepInputs& in, const torch::Tensor& weight) {
      for (auto& q : m->parameters()) q.mutable_grad().reset();
      SampledTerms t = terms;
      if (t.pos_log_q.defined()) t.pos_log_q = torch::cat({t.pos_log_q, torch::zeros({in.pos.size(0) - 17})});
      auto neg = kind == LossKind::Bce || kind == LossKind::Gbce ? in.neg : torch::Tensor();
      auto loss = loss_sum_rows(kind, m->forward_packed(in.packing, in.users), m->item_weight(), in.pos, neg,
                                kind == LossKind::SampledSoftmax ? in.shared : torch::Tensor(), t, weight);
      loss.backward();
      std::vector<torch::Tensor> grads;
      for (auto& q : m->parameters()) grads.push_back(q.grad().clone());
      return std::make_pair(loss.detach(), grads);
    };
    auto [want, want_grads] = step(s, {});
    const auto buckets = token_buckets(4 * 8);
    const PaddedInputs padded = pad_inputs(s, 64, padded_batch(buckets, 4, 8) + 4, 8);
    EXPECT_EQ(padded.inputs.pos.size(0), 64);
    EXPECT_EQ(padded.weight.sum().item<double>(), 17.0);
    auto [got, grads] = step(padded.inputs, padded.weight);
    EXPECT_LT(rel(got, want), 1e-6) << loss_name(kind);
    for (size_t i = 0; i < grads.size(); ++i)
      EXPECT_LT(rel(grads[i], want_grads[i]), 1e-5) << loss_name(kind) << " " << m->named_parameters()[i].key();
  }
}

// A model and histories where the tensor scorer must match the blocked one,
// ties included: items 5..9 share one embedding row, so their scores tie.
TEST(TensorScorer, RecommendsTheBlockedLists) {
  torch::manual_seed(14);
  SASRec m(options(AttentionKernel::Auto));
  {
    torch::NoGradGuard no_grad;
    for (int i = 6; i <= 9; ++i) m->item_weight()[i].copy_(m->item_weight()[5]);
  }
  std::vector<History> histories;
  for (int u = 0; u < 30; ++u) {
    History h;
    for (int t = 0; t < 1 + u % 7; ++t) h.items.push_back(1 + (u * 11 + t * 5) % 40);
    histories.push_back(h);
  }
  History most;  // a history covering all but three items: fewer than k left
  for (int i = 1; i <= 37; ++i) most.items.push_back(i);
  histories.push_back(most);
  for (int k : {1, 3, 10}) {
    for (int64_t memory_mb : {1, 256}) {
      auto want = recommend(m, histories, k, memory_mb, Scorer::Blocked);
      auto got = recommend(m, histories, k, memory_mb, Scorer::Tensor);
      ASSERT_EQ(got.size(), want.size());
      for (size_t u = 0; u < want.size(); ++u) {
        ASSERT_EQ(got[u].size(), want[u].size()) << "user " << u << " k " << k;
        for (size_t r = 0; r < want[u].size(); ++r) {
          EXPECT_EQ(got[u][r].item, want[u][r].item) << "user " << u << " rank " << r << " k " << k;
          EXPECT_FLOAT_EQ(got[u][r].score, want[u][r].score);
        }
      }
    }
  }
}

TEST(TensorScorer, RanksAsTheBlockedEvaluator) {
  test::Sequences seqs(25);
  for (int u = 0; u < 25; ++u)
    for (int t = 0; t < 4 + u % 6; ++t) seqs[u].push_back(1 + (u * 7 + t * 3) % 40);
  SplitData split(test::make_shard(seqs, 40));
  torch::manual_seed(15);
  SASRec m(options(AttentionKernel::Auto));
  auto comm = make_single_communicator();
  EvalConfig blocked, tensor;
  blocked.protocols = tensor.protocols = {Protocol::Full};
  blocked.scorer = Scorer::Blocked;
  tensor.scorer = Scorer::Tensor;
  tensor.memory_mb = 1;  // chunks of the catalog
  for (const char* split_name : {"valid", "test"}) {
    auto want = Evaluator(split, blocked, 1, *comm).ranks(m, split_name, Protocol::Full);
    auto got = Evaluator(split, tensor, 1, *comm).ranks(m, split_name, Protocol::Full);
    ASSERT_EQ(got.size(), want.size()) << split_name;
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].higher, want[i].higher) << split_name << " case " << i;
      EXPECT_EQ(got[i].ties, want[i].ties) << split_name << " case " << i;
      EXPECT_EQ(got[i].nonfinite, want[i].nonfinite) << split_name << " case " << i;
    }
  }
}

}  // namespace
