// test_model.cpp: SASRec's structural guarantees and the losses, against
// hand-computed expectations.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "sasrec/loss.h"
#include "sasrec/model.h"

using namespace sasrec;

namespace {

SASRecOptions small_options(Norm norm) {
  SASRecOptions o;
  o.num_items = 30;
  o.num_users = 4;
  o.hidden = 8;
  o.blocks = 2;
  o.heads = 2;
  o.maxlen = 6;
  o.dropout = 0.3;
  o.norm = norm;
  return o;
}

class ModelTest : public ::testing::TestWithParam<Norm> {};

}  // namespace

TEST_P(ModelTest, Causality) {
  // Changing the item at position t+1 changes no output at positions <= t.
  torch::manual_seed(1);
  SASRec model(small_options(GetParam()));
  model->eval();
  auto a = torch::tensor({{0, 3, 7, 9, 12, 4}}, torch::kInt64);
  auto b = a.clone();
  b[0][4] = 25;
  auto fa = model->forward(a), fb = model->forward(b);
  EXPECT_TRUE(torch::allclose(fa.slice(1, 0, 4), fb.slice(1, 0, 4), 0, 0)) << "positions before 4 changed";
  EXPECT_FALSE(torch::allclose(fa.select(1, 4), fb.select(1, 4)));
}

TEST_P(ModelTest, PaddingInvariance) {
  // More left padding (a wider batch) gives the same outputs at the items.
  torch::manual_seed(2);
  SASRec model(small_options(GetParam()));
  model->eval();
  auto narrow = torch::tensor({{5, 6, 7}, {0, 2, 9}}, torch::kInt64);
  auto wide = torch::tensor({{0, 0, 0, 5, 6, 7}, {0, 0, 0, 0, 2, 9}}, torch::kInt64);
  auto fn = model->forward(narrow), fw = model->forward(wide);
  EXPECT_TRUE(torch::allclose(fn, fw.slice(1, 3, 6), 1e-5, 1e-6)) << (fn - fw.slice(1, 3, 6)).abs().max();
  EXPECT_FALSE(torch::isnan(fw).any().item<bool>());
}

TEST_P(ModelTest, PaddingRowStaysZeroAndGetsNoGradient) {
  torch::manual_seed(3);
  SASRec model(small_options(GetParam()));
  EXPECT_EQ(model->item_weight()[0].abs().sum().item<float>(), 0.0f);
  model->train();
  auto seq = torch::tensor({{0, 0, 4, 5}, {1, 2, 3, 4}}, torch::kInt64);
  auto out = model->forward(seq);
  EXPECT_FALSE(torch::isnan(out).any().item<bool>());
  out.sum().backward();
  EXPECT_EQ(model->item_weight().grad()[0].abs().sum().item<float>(), 0.0f);
}

INSTANTIATE_TEST_SUITE_P(Norms, ModelTest, ::testing::Values(Norm::Pre, Norm::Post, Norm::Paper));

TEST(Model, XavierNormalInit) {
  // Xavier-normal std for a [fan_out, fan_in] matrix is sqrt(2 / (fan_in + fan_out)).
  torch::manual_seed(4);
  SASRecOptions o = small_options(Norm::Pre);
  o.num_items = 5000;
  o.hidden = 64;
  SASRec model(o);
  const double expected = std::sqrt(2.0 / (5001 + 64));
  EXPECT_NEAR(model->item_weight().slice(0, 1).std().item<double>(), expected, expected * 0.05);
  for (auto& p : model->named_parameters()) {
    if (p.key().find("bias") != std::string::npos) {
      // Linear biases keep libtorch's default uniform init; LayerNorm bias is 0.
      EXPECT_EQ(p.value().dim(), 1);
    }
    if (p.key().find("ln") != std::string::npos && p.key().find("weight") != std::string::npos)
      EXPECT_TRUE(torch::equal(p.value(), torch::ones_like(p.value()))) << p.key();
  }
}

TEST(Model, AttentionMaskHandWorked) {
  auto mask = attention_mask(torch::tensor({{0, 4, 5}}, torch::kInt64)).squeeze();
  const float inf = std::numeric_limits<float>::infinity();
  auto expected = torch::tensor({{0.f, -inf, -inf}, {-inf, 0.f, -inf}, {-inf, 0.f, 0.f}});
  EXPECT_TRUE(torch::equal(mask, expected)) << mask;
}

TEST(Model, UserEmbeddingAddsAUserVector) {
  torch::manual_seed(5);
  SASRecOptions o = small_options(Norm::Pre);
  o.user_embedding = true;
  SASRec model(o);
  model->eval();
  auto seq = torch::tensor({{1, 2, 3}, {1, 2, 3}}, torch::kInt64);
  auto out = model->forward(seq, torch::tensor({0, 3}, torch::kInt64));
  EXPECT_FALSE(torch::allclose(out[0], out[1]));
}

TEST(Model, WiderThanMaxlenIsRefused) {
  SASRec model(small_options(Norm::Pre));
  EXPECT_THROW(model->forward(torch::ones({1, 7}, torch::kInt64)), c10::Error);
}

// ---- the BERT-style variants (S3-Rec / ICLRec's SASRec) ---------------------------

namespace {
SASRecOptions bert_options() {
  SASRecOptions o = small_options(Norm::Post);
  o.activation = Activation::Gelu;
  o.ffn_hidden = 32;
  o.attention_output = true;
  o.embedding_norm = true;
  o.init = Init::Normal;
  return o;
}
}  // namespace

TEST(ModelVariants, CausalAndPaddingInvariant) {
  torch::manual_seed(6);
  SASRec model(bert_options());
  model->eval();
  auto a = torch::tensor({{0, 3, 7, 9, 12, 4}}, torch::kInt64);
  auto b = a.clone();
  b[0][4] = 25;
  auto fa = model->forward(a), fb = model->forward(b);
  EXPECT_TRUE(torch::allclose(fa.slice(1, 0, 4), fb.slice(1, 0, 4), 0, 0));
  EXPECT_FALSE(torch::allclose(fa.select(1, 4), fb.select(1, 4)));
  auto narrow = torch::tensor({{5, 6, 7}}, torch::kInt64);
  auto wide = torch::tensor({{0, 0, 0, 5, 6, 7}}, torch::kInt64);
  EXPECT_TRUE(torch::allclose(model->forward(narrow), model->forward(wide).slice(1, 3, 6), 1e-5, 1e-6));
}

TEST(ModelVariants, ParametersOfEachVariant) {
  // hidden 8, 2 blocks, maxlen 6, 30 items. Per block: q 72, k 64, v 72, two LayerNorms 32;
  // W_O 72; FFN w1 (32x8 + 32) + w2 (8x32 + 8) = 552 at inner width 32, 144 at 8.
  auto count = [](const SASRecOptions& o) {
    int64_t n = 0;
    for (const auto& p : SASRec(o)->parameters()) n += p.numel();
    return n;
  };
  const int64_t table = 31 * 8, positions = 6 * 8, final_ln = 16;
  EXPECT_EQ(count(small_options(Norm::Post)), table + positions + final_ln + 2 * (72 + 64 + 72 + 32 + 144));
  EXPECT_EQ(count(bert_options()), table + positions + final_ln + 16 + 2 * (72 + 64 + 72 + 32 + 72 + 552));
}

TEST(ModelVariants, NormalInitZeroesBiasesAndKeepsLayerNormAtOne) {
  torch::manual_seed(7);
  SASRecOptions o = bert_options();
  o.num_items = 5000;
  o.hidden = 64;
  o.init_std = 0.02;
  SASRec model(o);
  EXPECT_NEAR(model->item_weight().slice(0, 1).std().item<double>(), 0.02, 0.02 * 0.05);
  EXPECT_EQ(model->item_weight()[0].abs().sum().item<float>(), 0.0f);
  int biases = 0;
  for (auto& p : model->named_parameters()) {
    const bool is_ln = p.key().find("ln") != std::string::npos;
    if (p.key().find("bias") != std::string::npos) {
      EXPECT_EQ(p.value().abs().sum().item<float>(), 0.0f) << p.key();
      ++biases;
    } else if (is_ln) {
      EXPECT_TRUE(torch::equal(p.value(), torch::ones_like(p.value()))) << p.key();
    }
  }
  // q, v, o, w1, w2 and two LayerNorms per block, the final and the embedding LayerNorm.
  EXPECT_EQ(biases, 2 * 7 + 2);
}

TEST(ModelVariants, GeluFeedForwardByHand) {
  // One hidden unit in and out, inner width 2: y = w2 . gelu(w1 x + b1) + b2,
  // gelu(z) = z Phi(z) = z (1 + erf(z / sqrt 2)) / 2.
  FeedForward ffn(1, 2, Activation::Gelu, 0.0, std::make_shared<DropoutStream>());
  ffn->eval();
  {
    torch::NoGradGuard g;
    auto params = ffn->named_parameters();
    params["w1.weight"].copy_(torch::tensor({{1.5}, {-0.5}}));
    params["w1.bias"].copy_(torch::tensor({0.25, 1.0}));
    params["w2.weight"].copy_(torch::tensor({{2.0, -1.0}}));
    params["w2.bias"].copy_(torch::tensor({0.1}));
  }
  auto gelu = [](double z) { return z * 0.5 * (1.0 + std::erf(z / std::sqrt(2.0))); };
  const double x = 0.8;
  const double expected = 2.0 * gelu(1.5 * x + 0.25) - 1.0 * gelu(-0.5 * x + 1.0) + 0.1;
  const double got = ffn->forward(torch::tensor({{x}}, torch::kFloat32)).item<double>();
  EXPECT_NEAR(got, expected, 1e-6);
}

TEST(ModelVariants, EmbeddingNormMakesTheOutputBlindToTheEmbeddingScale) {
  // LayerNorm(c (E + P)) = LayerNorm(E + P) for c > 0 (up to its epsilon), so
  // scaling M and P together leaves every output as it was; with the paper's
  // sqrt(d) E + P there is no LayerNorm before the first block and it does not.
  for (bool norm : {true, false}) {
    torch::manual_seed(8);
    SASRecOptions o = bert_options();
    o.embedding_norm = norm;
    o.init = Init::Xavier;  // nonzero biases: without the LayerNorm the first block sees the scale
    SASRec model(o);
    model->eval();
    auto seq = torch::tensor({{0, 3, 7, 9}, {1, 2, 3, 4}}, torch::kInt64);
    auto before = model->forward(seq);
    {
      torch::NoGradGuard g;
      for (auto& p : model->named_parameters())
        if (p.key() == "item.weight" || p.key() == "position.weight") p.value().mul_(3.0);
    }
    auto after = model->forward(seq);
    EXPECT_EQ(torch::allclose(before, after, 1e-4, 1e-5), norm) << "embedding_norm " << norm;
  }
}

// ---- losses, against sums worked in double here -----------------------------------

namespace {
struct LossFixture {
  torch::Tensor features = torch::tensor({{{1.0, 0.0}, {0.5, -1.0}}}, torch::kFloat32);  // [1,2,2]
  torch::Tensor weight = torch::tensor({{0.0, 0.0}, {1.0, 2.0}, {-1.0, 0.5}, {0.25, 0.25}}, torch::kFloat32);
  Batch batch;
  LossFixture() {
    batch.seq = torch::tensor({{0, 1}}, torch::kInt64);
    batch.pos = torch::tensor({{0, 2}}, torch::kInt64);  // position 0 ignored
    batch.neg = torch::tensor({{0, 3}}, torch::kInt64);
    batch.targets = 1;
  }
};
double softplus(double x) { return std::log1p(std::exp(x)); }
}  // namespace

TEST(Loss, BceHandWorked) {
  LossFixture f;
  // h = (0.5, -1); pos item 2 = (-1, 0.5): logit -1.0; neg item 3 = (.25,.25): logit -0.125
  const double expected = softplus(1.0) + softplus(-0.125);
  EXPECT_NEAR(loss_sum(LossKind::Bce, f.features, f.weight, f.batch).item<double>(), expected, 1e-6);
}

TEST(Loss, CeHandWorked) {
  LossFixture f;
  // logits over items 1..3: (0.5-2, -0.5-0.5, 0.125-0.25) = (-1.5, -1.0, -0.125), target item 2
  const double lse = std::log(std::exp(-1.5) + std::exp(-1.0) + std::exp(-0.125));
  EXPECT_NEAR(loss_sum(LossKind::Ce, f.features, f.weight, f.batch).item<double>(), lse + 1.0, 1e-6);
}

TEST(Loss, SampledSoftmaxRemovesAccidentalHits) {
  LossFixture f;
  f.batch.shared = torch::tensor({1, 2, 3}, torch::kInt64);  // 2 is the target: removed
  const double lse = std::log(std::exp(-1.0) + std::exp(-1.5) + std::exp(-0.125));
  EXPECT_NEAR(loss_sum(LossKind::SampledSoftmax, f.features, f.weight, f.batch).item<double>(), lse + 1.0, 1e-6);
}

// Logits of the fixture's h = (0.5, -1): item 1 -1.5, item 2 (the target) -1.0, item 3 -0.125.
TEST(Loss, SampledSoftmaxPopularityLogQ) {
  LossFixture f;
  // Proposal counts (0, 5, 3, 2): q = (.5, .3, .2); K = 3 draws, log(K q) by hand.
  const std::vector<double> log_kq{0.0, std::log(1.5), std::log(0.9), std::log(0.6)};
  EXPECT_TRUE(torch::allclose(log_expected_counts({0, 5, 3, 2}, 3).slice(0, 1),
                              torch::tensor({log_kq[1], log_kq[2], log_kq[3]}, torch::kFloat32)));
  EXPECT_EQ(log_expected_counts({0, 5, 3, 2}, 3)[0].item<float>(), -std::numeric_limits<float>::infinity());
  auto table = torch::tensor(log_kq, torch::kFloat32);
  f.batch.shared = torch::tensor({1, 3, 3}, torch::kInt64);
  const double pos = -1.0 - log_kq[2];
  double z = std::exp(pos) + std::exp(-1.5 - log_kq[1]) + 2 * std::exp(-0.125 - log_kq[3]);
  EXPECT_NEAR(loss_sum(LossKind::SampledSoftmax, f.features, f.weight, f.batch, table).item<double>(),
              std::log(z) - pos, 1e-6);
  // The batch's own shared_log_q (what the sampler sets) wins over the table.
  f.batch.shared_log_q = torch::tensor({log_kq[1], log_kq[3], log_kq[3]}, torch::kFloat32);
  EXPECT_NEAR(loss_sum(LossKind::SampledSoftmax, f.features, f.weight, f.batch, table).item<double>(),
              std::log(z) - pos, 1e-6);
  // An accidental hit (item 2) leaves the negatives; the target keeps its correction.
  f.batch.shared = torch::tensor({1, 2, 3}, torch::kInt64);
  f.batch.shared_log_q = torch::Tensor();
  z = std::exp(pos) + std::exp(-1.5 - log_kq[1]) + std::exp(-0.125 - log_kq[3]);
  EXPECT_NEAR(loss_sum(LossKind::SampledSoftmax, f.features, f.weight, f.batch, table).item<double>(),
              std::log(z) - pos, 1e-6);
}

TEST(Loss, SampledLossesOnALocalTable) {
  // The trainer may pass a batch-local table with remapped indices; log-Q
  // comes from global ids. Local rows: 0 = item 3, 1 = item 1, 2 = item 2.
  LossFixture f;
  auto h = torch::tensor({{0.5, -1.0}}, torch::kFloat32);  // the one target
  auto local = f.weight.index_select(0, torch::tensor({3, 1, 2}, torch::kInt64));
  auto pos = torch::tensor({2}, torch::kInt64), shared = torch::tensor({1, 0, 0}, torch::kInt64);  // items 1, 3, 3
  const double lq1 = std::log(1.5), lq2 = std::log(0.9), lq3 = std::log(0.6);
  SampledTerms terms{torch::tensor({lq2}, torch::kFloat32), torch::tensor({lq1, lq3, lq3}, torch::kFloat32), 1};
  const double p = -1.0 - lq2;
  const double z = std::exp(p) + std::exp(-1.5 - lq1) + 2 * std::exp(-0.125 - lq3);
  EXPECT_NEAR(loss_sum_rows(LossKind::SampledSoftmax, h, local, pos, {}, shared, terms).item<double>(), std::log(z) - p,
              1e-6);
  // gbce: k = 3 negatives for the one target, [N,k] local rows: items 1, 3, 3; then 1, 2 (a hit), 3.
  SampledTerms g;
  g.gbce_beta = 0.5;
  auto neg = torch::tensor({{1, 0, 0}}, torch::kInt64);
  EXPECT_NEAR(loss_sum_rows(LossKind::Gbce, h, local, pos, neg, {}, g).item<double>(),
              0.5 * softplus(1.0) + softplus(-1.5) + 2 * softplus(-0.125), 1e-6);
  neg = torch::tensor({{1, 2, 0}}, torch::kInt64);
  EXPECT_NEAR(loss_sum_rows(LossKind::Gbce, h, local, pos, neg, {}, g).item<double>(),
              0.5 * softplus(1.0) + softplus(-1.5) + softplus(-0.125), 1e-6);
}

TEST(Loss, GbceBetaFollowsThePaper) {
  // alpha = K / (I - 1) = 25 / 100; beta = alpha (t (1 - 1/alpha) + 1/alpha) = 0.25 (0.75 * -3 + 4).
  EXPECT_NEAR(gbce_beta(25, 101, 0.75), 0.4375, 1e-12);
  EXPECT_NEAR(gbce_beta(25, 101, 1.0), 0.25, 1e-12);  // t = 1: beta = alpha
  EXPECT_NEAR(gbce_beta(25, 101, 0.0), 1.0, 1e-12);   // t = 0: plain BCE
  // Beauty: K = 256, I = 12101.
  const double alpha = 256.0 / 12100.0;
  EXPECT_NEAR(gbce_beta(256, 12101, 0.75), alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha), 1e-12);
}

TEST(Loss, GbceHandWorkedAndHitsMasked) {
  LossFixture f;
  const double beta = 0.4375;
  // k = 2 negatives per target, [B,T,k]; position 0 ignored (0s). Items 1 and 3: logits -1.5, -0.125.
  f.batch.neg = torch::tensor({{{0, 0}, {1, 3}}}, torch::kInt64);
  EXPECT_NEAR(loss_sum(LossKind::Gbce, f.features, f.weight, f.batch, {}, beta).item<double>(),
              beta * softplus(1.0) + softplus(-1.5) + softplus(-0.125), 1e-6);
  // Item 2 is the target: an accidental hit, its term removed.
  f.batch.neg = torch::tensor({{{0, 0}, {3, 2}}}, torch::kInt64);
  EXPECT_NEAR(loss_sum(LossKind::Gbce, f.features, f.weight, f.batch, {}, beta).item<double>(),
              beta * softplus(1.0) + softplus(-0.125), 1e-6);
  // t = 0 (beta 1) with k = 1 negative is the paper's BCE with that negative (BceHandWorked's value).
  f.batch.neg = torch::tensor({{{0}, {3}}}, torch::kInt64);
  EXPECT_NEAR(loss_sum(LossKind::Gbce, f.features, f.weight, f.batch, {}, gbce_beta(1, 3, 0.0)).item<double>(),
              softplus(1.0) + softplus(-0.125), 1e-6);
}

TEST(Loss, GbceTwoNegativesPerTargetByHand) {
  // Both positions are targets, each with its own k = 2 negatives.
  // h0 = (1, 0): item 1 -> 1, item 2 -> -1, item 3 -> 0.25.
  // h1 = (0.5, -1): item 1 -> -1.5, item 2 -> -1.0, item 3 -> -0.125.
  LossFixture f;
  f.batch.seq = torch::tensor({{3, 1}}, torch::kInt64);
  f.batch.pos = torch::tensor({{1, 2}}, torch::kInt64);
  f.batch.neg = torch::tensor({{{2, 3}, {1, 2}}}, torch::kInt64);  // target 1's second negative is its target
  f.batch.targets = 2;
  const double beta = 0.25;
  const double t0 = beta * softplus(-1.0) + softplus(-1.0) + softplus(0.25);
  const double t1 = beta * softplus(1.0) + softplus(-1.5);  // the hit (item 2) counts 0
  EXPECT_NEAR(loss_sum(LossKind::Gbce, f.features, f.weight, f.batch, {}, beta).item<double>(), t0 + t1, 1e-6);
  // The gradient of the hit's row comes only from its positive term: d/ds beta softplus(-s) = -beta sig(-s).
  auto w = f.weight.clone().requires_grad_(true);
  loss_sum(LossKind::Gbce, f.features, w, f.batch, {}, beta).backward();
  auto sig = [](double x) { return 1 / (1 + std::exp(-x)); };
  // Item 2: target of h1 (s = -1.0, weight -beta sig(1.0)), negative of h0 (s = -1, weight sig(-1)).
  const double c1 = -beta * sig(1.0), c0 = sig(-1.0);
  EXPECT_NEAR(w.grad()[2][0].item<double>(), c1 * 0.5 + c0 * 1.0, 1e-6);
  EXPECT_NEAR(w.grad()[2][1].item<double>(), c1 * -1.0 + c0 * 0.0, 1e-6);
}

// ---- dropout ------------------------------------------------------------------------

TEST(Dropout, MaskKeepsTheRightShareScaledAndIsReproducible) {
  auto m = dropout_mask({1000, 1000}, 0.3, 42, torch::kFloat32);
  const float scale = 1.0f / 0.7f;
  auto kept = (m != 0);
  EXPECT_NEAR(kept.to(torch::kFloat64).mean().item<double>(), 0.7, 0.002);
  EXPECT_TRUE(torch::allclose(m.masked_select(kept), torch::full({kept.sum().item<int64_t>()}, scale)));
  EXPECT_TRUE(torch::equal(m, dropout_mask({1000, 1000}, 0.3, 42, torch::kFloat32)));
  EXPECT_FALSE(torch::equal(m, dropout_mask({1000, 1000}, 0.3, 43, torch::kFloat32)));
  const int threads = torch::get_num_threads();
  torch::set_num_threads(1);
  EXPECT_TRUE(torch::equal(m, dropout_mask({1000, 1000}, 0.3, 42, torch::kFloat32)));
  torch::set_num_threads(threads);
}

TEST(Dropout, OffInEvalAndAtZero) {
  DropoutStream s;
  auto x = torch::randn({4, 5});
  EXPECT_TRUE(torch::equal(dropout(x, 0.5, false, s), x));
  EXPECT_TRUE(torch::equal(dropout(x, 0.0, true, s), x));
  auto y = dropout(x, 0.5, true, s), z = dropout(x, 0.5, true, s);
  EXPECT_FALSE(torch::equal(y, z)) << "successive calls draw new masks";
}
