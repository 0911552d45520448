// test_kernels.cpp: the fused CPU kernels against independent computations:
// packed attention against the tensor-op reference on the padded batch and
// hand-worked cases,
// FusedAdam against torch::optim::Adam (and AdamW for the decoupled weight
// decay), the learning-rate schedule by hand.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "sasrec/attention.h"
#include "sasrec/model.h"
#include "sasrec/optimizer.h"
#include "sasrec/torch_compat.h"
#include "sasrec/trainer.h"

using namespace sasrec;

namespace {

struct Grads {
  torch::Tensor out, dq, dk, dv;
};

// Output and input gradients of `f` for a fixed upstream gradient.
template <typename F>
Grads run(F f, const torch::Tensor& q0, const torch::Tensor& k0, const torch::Tensor& v0, const torch::Tensor& up) {
  auto q = q0.clone().requires_grad_(true), k = k0.clone().requires_grad_(true), v = v0.clone().requires_grad_(true);
  auto out = f(q, k, v);
  (out * up).sum().backward();
  return {out.detach(), q.grad(), k.grad(), v.grad()};
}

void expect_close(const torch::Tensor& a, const torch::Tensor& b, const char* what) {
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6)) << what << ": max difference " << (a - b).abs().max().item<float>();
}

}  // namespace

TEST(PackedAttention, MatchesTensorOpReferenceOnThePaddedBatch) {
  torch::manual_seed(7);
  const int64_t B = 4, T = 6, D = 12, H = 3;
  // Left padding of 0, 2, 5 and 6 (an empty sequence) positions.
  auto seq = torch::tensor({{1, 2, 3, 4, 5, 6}, {0, 0, 3, 4, 5, 6}, {0, 0, 0, 0, 0, 6}, {0, 0, 0, 0, 0, 0}});
  const Packing packing = pack_sequences(seq, T);
  const int64_t N = packing.items.size(0);
  ASSERT_EQ(N, 6 + 4 + 1);
  ASSERT_TRUE(torch::equal(packing.offsets, torch::tensor({0, 6, 10, 11, 11}, torch::kInt64)));
  auto q = torch::randn({N, D}), k = torch::randn({N, D}), v = torch::randn({N, D}), up = torch::randn({N, D});
  auto pad = [&](const torch::Tensor& x) {  // packed [N,D] -> padded [B,T,D]
    return torch::zeros({B * T, D}).index_copy(0, packing.index, x).view({B, T, D});
  };
  auto unpad = [&](const torch::Tensor& x) { return x.reshape({B * T, D}).index_select(0, packing.index); };
  for (double p : {0.0, 0.3}) {
    const uint64_t key = 99;
    auto fused =
        run([&](auto& a, auto& b, auto& c) { return packed_causal_attention(a, b, c, packing.offsets, H, p, key); }, q,
            k, v, up);
    auto drop = p > 0 ? packed_attention_dropout_mask(packing.offsets, H, T, p, key) : torch::Tensor();
    auto ref = run(
        [&](auto& a, auto& b, auto& c) {
          return unpad(causal_attention_reference(pad(a), pad(b), pad(c), attention_mask(seq), H, drop));
        },
        q, k, v, up);
    SCOPED_TRACE(p);
    expect_close(fused.out, ref.out, "output");
    expect_close(fused.dq, ref.dq, "dq");
    expect_close(fused.dk, ref.dk, "dk");
    expect_close(fused.dv, ref.dv, "dv");
    if (p > 0) {  // the mask really drops: about 30% of the weights of the 6-item sequence are 0
      const double dropped = (drop[0] == 0).to(torch::kFloat64).mean().item<double>();
      EXPECT_GT(dropped, 0.15);
      EXPECT_LT(dropped, 0.45);
    }
  }
}

TEST(PackedAttention, HandWorkedOneHead) {
  // D = 1: scores q_i k_j; position 0 sees only itself, position 1 both.
  auto q = torch::tensor({1.0f, 2.0f}).view({2, 1}), k = torch::tensor({3.0f, 4.0f}).view({2, 1});
  auto v = torch::tensor({10.0f, 20.0f}).view({2, 1});
  auto out = packed_causal_attention(q, k, v, torch::tensor({0, 2}, torch::kInt64), 1, 0.0, 0);
  const double w0 = std::exp(6.0) / (std::exp(6.0) + std::exp(8.0));  // softmax(2*3, 2*4)
  EXPECT_NEAR(out[0][0].item<float>(), 10.0, 1e-5);
  EXPECT_NEAR(out[1][0].item<float>(), w0 * 10 + (1 - w0) * 20, 1e-4);
}

TEST(PackedAttention, SequencesDoNotSeeEachOther) {
  // Two one-item sequences: each output is its own value, whatever the other's key.
  auto q = torch::tensor({5.0f, 1.0f}).view({2, 1}), k = torch::tensor({100.0f, 1.0f}).view({2, 1});
  auto v = torch::tensor({-7.0f, 3.0f}).view({2, 1});
  auto out = packed_causal_attention(q, k, v, torch::tensor({0, 1, 2}, torch::kInt64), 1, 0.0, 0);
  EXPECT_FLOAT_EQ(out[0][0].item<float>(), -7.0f);
  EXPECT_FLOAT_EQ(out[1][0].item<float>(), 3.0f);
}

TEST(PackedAttention, PackingPositionsCountFromTheRight) {
  auto p = pack_sequences(torch::tensor({{0, 0, 7}, {4, 5, 6}}, torch::kInt64), 50);
  EXPECT_TRUE(torch::equal(p.items, torch::tensor({7, 4, 5, 6}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(p.positions, torch::tensor({49, 47, 48, 49}, torch::kInt64)));
  EXPECT_TRUE(torch::equal(p.sequence, torch::tensor({0, 1, 1, 1}, torch::kInt64)));
}

TEST(FusedAdam, MatchesTorchAdamStepForStep) {
  torch::manual_seed(3);
  auto a1 = torch::randn({50, 7}), b1 = torch::randn({7});
  auto a2 = a1.clone(), b2 = b1.clone();
  a1.requires_grad_(true), b1.requires_grad_(true), a2.requires_grad_(true), b2.requires_grad_(true);
  auto groups = [](torch::Tensor a, torch::Tensor b) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(std::vector<torch::Tensor>{a},
                   std::make_unique<torch::optim::AdamOptions>(
                       torch::optim::AdamOptions(1e-2).betas({0.9, 0.98}).weight_decay(0.1)));
    g.emplace_back(std::vector<torch::Tensor>{b},
                   std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(1e-2).betas({0.9, 0.98})));
    return g;
  };
  torch::optim::Adam reference(groups(a1, b1), torch::optim::AdamOptions(1e-2));
  FusedAdam fused(groups(a2, b2), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 20; ++step) {
    auto g = torch::randn({50, 7}), h = torch::randn({7});
    a1.mutable_grad() = g.clone(), a2.mutable_grad() = g.clone();
    // Step 5: b has no gradient, so neither optimizer touches it.
    if (step == 5)
      b1.mutable_grad().reset(), b2.mutable_grad().reset();
    else
      b1.mutable_grad() = h.clone(), b2.mutable_grad() = h.clone();
    reference.step();
    fused.step();
    ASSERT_TRUE(torch::allclose(a1, a2, 1e-5, 1e-6)) << "step " << step << ": " << (a1 - a2).abs().max().item<float>();
    ASSERT_TRUE(torch::allclose(b1, b2, 1e-5, 1e-6)) << "step " << step;
  }
  // Same state where Adam keeps it: checkpoints written by either load into the other.
  std::stringstream saved;
  {
    torch::serialize::OutputArchive archive;
    fused.save(archive);
    archive.save_to(saved);
  }
  torch::optim::Adam restored(groups(a1, b1), torch::optim::AdamOptions(1e-2));
  torch::serialize::InputArchive in;
  in.load_from(saved);
  restored.load(in);
  for (auto* state : {&reference, &restored}) {
    auto key = compat::optimizer_state_key(state->param_groups()[0].params()[0]);
    EXPECT_EQ(static_cast<torch::optim::AdamParamState&>(*state->state().at(key)).step(), 20);
  }
}

TEST(FusedAdam, DecoupledWeightDecayMatchesTorchAdamW) {
  // train.weight_decay: FusedAdam with decoupled decay on `a` against
  // torch::optim::AdamW (w *= 1 - lr wd, then Adam's step); `b` is left out
  // of the decay, so it must follow plain Adam. The rate changes every step
  // (set_lr, as a schedule does) in both.
  torch::manual_seed(4);
  auto a1 = torch::randn({30, 5}), b1 = torch::randn({5});
  auto a2 = a1.clone(), b2 = b1.clone();
  for (auto* t : {&a1, &b1, &a2, &b2}) t->requires_grad_(true);
  auto adamw = torch::optim::AdamWOptions(1e-2).betas({0.9, 0.999}).weight_decay(0.3);
  torch::optim::AdamW reference_a({a1}, adamw);
  torch::optim::Adam reference_b({b1}, torch::optim::AdamOptions(1e-2).betas({0.9, 0.999}));
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(std::vector<torch::Tensor>{a2, b2},
                      std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(1e-2).betas({0.9, 0.999})));
  FusedAdam fused(std::move(groups), torch::optim::AdamOptions(1e-2));
  fused.set_decoupled_weight_decay({a2}, 0.3);
  for (int step = 0; step < 15; ++step) {
    const double lr = 1e-2 / (1 + step);
    static_cast<torch::optim::AdamWOptions&>(reference_a.param_groups()[0].options()).lr(lr);
    static_cast<torch::optim::AdamOptions&>(reference_b.param_groups()[0].options()).lr(lr);
    fused.set_lr(lr);
    auto g = torch::randn({30, 5}), h = torch::randn({5});
    a1.mutable_grad() = g.clone(), a2.mutable_grad() = g.clone();
    b1.mutable_grad() = h.clone(), b2.mutable_grad() = h.clone();
    reference_a.step();
    reference_b.step();
    fused.step();
    ASSERT_TRUE(torch::allclose(a1, a2, 1e-5, 1e-6)) << "step " << step << ": " << (a1 - a2).abs().max().item<float>();
    ASSERT_TRUE(torch::allclose(b1, b2, 1e-5, 1e-6)) << "step " << step;
  }
}

TEST(LrSchedule, WarmupThenConstantCosineOrLinear) {
  TrainConfig t;
  t.lr = 1e-3;
  t.min_lr = 1e-4;
  t.warmup_steps = 10;
  // Warm-up: lr * step / 10, whatever the schedule after it.
  for (auto kind : {LrSchedule::Constant, LrSchedule::Cosine, LrSchedule::Linear}) {
    t.lr_schedule = kind;
    EXPECT_DOUBLE_EQ(scheduled_lr(t, 1, 110), 1e-4);
    EXPECT_DOUBLE_EQ(scheduled_lr(t, 5, 110), 5e-4);
    EXPECT_DOUBLE_EQ(scheduled_lr(t, 10, 110), 1e-3);
  }
  t.lr_schedule = LrSchedule::Constant;
  EXPECT_DOUBLE_EQ(scheduled_lr(t, 110, 110), 1e-3);
  // After the warm-up, 100 steps from lr to min_lr: halfway, the cosine and
  // the line both sit at the mean; a quarter in, the cosine at
  // min + (lr - min) (1 + cos(pi/4)) / 2.
  t.lr_schedule = LrSchedule::Cosine;
  EXPECT_NEAR(scheduled_lr(t, 60, 110), 5.5e-4, 1e-15);
  EXPECT_NEAR(scheduled_lr(t, 35, 110), 1e-4 + 9e-4 * (1 + std::sqrt(0.5)) / 2, 1e-15);
  EXPECT_NEAR(scheduled_lr(t, 110, 110), 1e-4, 1e-15);
  EXPECT_NEAR(scheduled_lr(t, 500, 110), 1e-4, 1e-15);  // past the end: min_lr
  t.lr_schedule = LrSchedule::Linear;
  EXPECT_NEAR(scheduled_lr(t, 60, 110), 5.5e-4, 1e-15);
  EXPECT_NEAR(scheduled_lr(t, 35, 110), 1e-3 - 9e-4 * 0.25, 1e-15);
  EXPECT_NEAR(scheduled_lr(t, 110, 110), 1e-4, 1e-15);
  // No warm-up: step 1 already at (nearly) lr.
  t.warmup_steps = 0;
  t.lr_schedule = LrSchedule::Cosine;
  EXPECT_NEAR(scheduled_lr(t, 0, 100), 1e-3, 1e-15);
}

TEST(AllFinite, FindsEveryNonFiniteValueWherever) {
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t n : {1, 7, 8, 9, 1000, 1003}) {
    auto t = torch::randn({n}) * 1e30;  // big finite values: their x * 0 is still 0
    EXPECT_TRUE(all_finite(t)) << n;
    for (int64_t at : {int64_t{0}, n / 2, n - 1})
      for (float bad : {nan, inf, -inf}) {
        auto u = t.clone();
        u[at] = bad;
        EXPECT_FALSE(all_finite(u)) << "n=" << n << " at=" << at << " value=" << bad;
        EXPECT_FALSE(all_finite(u.to(torch::kFloat64))) << "float64 n=" << n;
      }
  }
  auto m = torch::zeros({4, 6});
  m[3][1] = nan;
  EXPECT_FALSE(all_finite(m.t()));  // not contiguous
  EXPECT_TRUE(all_finite(torch::zeros({0})));
}
