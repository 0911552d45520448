// test_fused.cpp: the fused training step (fused_model.h) against the
// libtorch module and autograd (model.h + loss.h): the loss and every
// parameter's gradient, float32, for every model option and loss, with
// dropout on (the same masks) and off, on the full item table and on a
// batch-local one (item_rows.h), on one thread and on two; and the config
// key model.kernels.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <tuple>

#include "sasrec/config.h"
#include "sasrec/dropout_bits.h"
#include "sasrec/error.h"
#include "sasrec/fused_layers.h"
#include "sasrec/fused_model.h"
#include "sasrec/item_rows.h"
#include "sasrec/loss.h"
#include "sasrec/model.h"
#include "sasrec/optimizer.h"

using namespace sasrec;

namespace {

constexpr int64_t kItems = 40, kUsers = 7, kMaxlen = 20;
constexpr double kTolerance = 1e-5;  // relative: |a - b| / |b| per tensor (2-norms)

struct Case {
  std::string name;
  Norm norm = Norm::Pre;
  int heads = 1;
  int ffn_hidden = 0;
  Activation activation = Activation::Relu;
  bool attention_output = false, embedding_norm = false, user_embedding = false;
  double dropout = 0.3;
  LossKind loss = LossKind::Bce;
  bool popularity = false;  // sampled_softmax with log-Q
  bool local_table = true;  // item rows as the trainer gathers them (never for ce)
  int threads = 1;
};

SASRecOptions options_of(const Case& c) {
  SASRecOptions o;
  o.num_items = kItems, o.num_users = kUsers, o.hidden = 12, o.blocks = 2, o.maxlen = kMaxlen;
  o.heads = c.heads, o.ffn_hidden = c.ffn_hidden, o.activation = c.activation, o.norm = c.norm;
  o.attention_output = c.attention_output, o.embedding_norm = c.embedding_norm, o.user_embedding = c.user_embedding;
  o.dropout = c.dropout;
  o.attention = AttentionKernel::Fused;
  return o;
}

// A left-padded batch: lengths 20, 5 and 12 (the attention's BLAS path), 1 and 3 (its loops), 0 (no item).
torch::Tensor batch_seq() {
  auto seq = torch::zeros({6, kMaxlen}, torch::kInt64);
  const int64_t lengths[] = {20, 5, 1, 3, 0, 12};
  for (int64_t b = 0; b < 6; ++b)
    for (int64_t t = 0; t < lengths[b]; ++t) seq[b][kMaxlen - lengths[b] + t] = 1 + (7 * b + 3 * t * t + t) % kItems;
  return seq;
}

// One step's inputs, as the trainer has them before gather_item_rows.
struct Inputs {
  Packing packing;
  torch::Tensor users, pos, neg, shared, pos_log_q, shared_log_q;
};

Inputs inputs_of(const Case& c) {
  Inputs in;
  in.packing = pack_sequences(batch_seq(), kMaxlen);
  const auto& items = in.packing.items;
  const int64_t n = items.size(0);
  in.users = torch::tensor({3, 0, 6, 2, 5, 1}, torch::kInt64);
  in.pos = (items * 5 + 2) % kItems + 1;
  if (c.loss == LossKind::Bce) in.neg = (items * 3) % kItems + 1;
  if (c.loss == LossKind::Gbce) {  // 4 per target; some equal to the target (hits)
    in.neg = torch::stack({(items * 3) % kItems + 1, in.pos, (items + 9) % kItems + 1, (items * 11) % kItems + 1}, 1)
                 .contiguous();
  }
  if (c.loss == LossKind::SampledSoftmax) {
    // Targets are 3, 8, ..., 38 (5 items + 2 mod 40, + 1): 8, 23 and 38 are accidental hits, 8 twice.
    in.shared = torch::tensor({8, 17, 23, 8, 35, 9, 1, 38}, torch::kInt64);
    if (c.popularity) {
      auto log_kq = torch::linspace(-2.0, 1.5, kItems + 1);  // any finite log(K q(i)) by item id
      in.pos_log_q = log_kq.index_select(0, in.pos);
      in.shared_log_q = log_kq.index_select(0, in.shared);
    }
  }
  EXPECT_EQ(n, 20 + 5 + 1 + 3 + 12);
  return in;
}

struct StepResult {
  double loss = 0;
  std::map<std::string, torch::Tensor> grads;  // every parameter's, and "rows" for the local table's
  uint64_t dropout_calls = 0;
};

// The step both ways on the same model and inputs; `fused` picks the path.
StepResult step(SASRec& model, const Case& c, bool fused_path) {
  Inputs in = inputs_of(c);
  for (auto& p : model->parameters()) p.mutable_grad().reset();
  model->train();
  model->reseed_dropout(0xabc, 4);
  const bool local = c.local_table && c.loss != LossKind::Ce;
  ItemRows rows;
  if (local) rows = gather_item_rows(model->item_weight(), {&in.packing.items, &in.pos, &in.neg, &in.shared});
  const torch::Tensor table = local ? rows.table : model->item_weight();
  SampledTerms terms{in.pos_log_q, in.shared_log_q, c.loss == LossKind::Gbce ? gbce_beta(4, kItems, 0.75) : 1.0};
  const double scale = 1.0 / static_cast<double>(in.pos.size(0));
  StepResult r;
  if (fused_path) {
    at::set_num_threads(c.threads);
    FusedSASRec fused(model, c.loss);
    r.loss = fused.forward_backward(in.packing, in.users, table, in.pos, in.neg, in.shared, terms, scale).loss_sum;
    at::set_num_threads(1);
  } else {
    auto features = model->forward_packed(in.packing, in.users, local ? rows.table : torch::Tensor());
    auto sum = loss_sum_rows(c.loss, features, table, in.pos, in.neg, in.shared, terms);
    (sum * scale).backward();
    r.loss = sum.item<double>();
  }
  for (auto& p : model->named_parameters())
    if (p.value().grad().defined()) r.grads[p.key()] = p.value().grad().clone();
  if (local) r.grads["rows"] = rows.table.grad().clone();
  r.dropout_calls = model->dropout_calls();
  return r;
}

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  auto x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  return ((x - y).norm() / y.norm().clamp_min(1e-30)).item<double>();
}

class FusedStep : public ::testing::TestWithParam<Case> {};

}  // namespace

TEST_P(FusedStep, LossAndEveryGradientMatchAutograd) {
  const Case& c = GetParam();
  at::set_num_threads(1);
  torch::manual_seed(17);
  SASRec model(options_of(c));
  const StepResult want = step(model, c, false);
  const StepResult got = step(model, c, true);
  EXPECT_NEAR(got.loss, want.loss, kTolerance * std::abs(want.loss)) << c.name;
  EXPECT_EQ(got.dropout_calls, want.dropout_calls) << "both paths draw the same number of masks";
  if (c.dropout > 0) EXPECT_GT(want.dropout_calls, 4u);
  ASSERT_EQ(got.grads.size(), want.grads.size()) << c.name << ": the same parameters get gradients";
  for (const auto& [name, g] : want.grads) {
    ASSERT_TRUE(got.grads.count(name)) << name;
    ASSERT_EQ(got.grads.at(name).sizes(), g.sizes()) << name;
    EXPECT_LT(rel(got.grads.at(name), g), kTolerance) << c.name << ": " << name;
    EXPECT_GT(g.abs().max().item<double>(), 0) << c.name << ": " << name << " has an all-zero gradient";
  }
}

namespace {
std::vector<Case> cases() {
  std::vector<Case> v;
  auto add = [&](Case c) { v.push_back(c); };
  for (Norm n : {Norm::Pre, Norm::Post, Norm::Paper}) {
    const char* norm = norm_name(n);
    add({std::string(norm) + "_bce_dropout", n});
    Case off{std::string(norm) + "_bce_no_dropout", n};
    off.dropout = 0;
    add(off);
    Case heads{std::string(norm) + "_3heads_output_ffn20_gelu", n, 3, 20, Activation::Gelu, true};
    add(heads);
  }
  Case emb{"embedding_norm_user_embedding", Norm::Pre, 2};
  emb.embedding_norm = true, emb.user_embedding = true;
  add(emb);
  Case paper_user{"paper_user_embedding_output", Norm::Paper, 1};
  paper_user.user_embedding = true, paper_user.attention_output = true;
  add(paper_user);
  Case full{"bce_full_table", Norm::Pre};
  full.local_table = false;
  add(full);
  Case ce{"ce", Norm::Pre, 2};
  ce.loss = LossKind::Ce;
  add(ce);
  Case ce_post{"ce_post_two_threads", Norm::Post};
  ce_post.loss = LossKind::Ce, ce_post.threads = 2;
  add(ce_post);
  Case ss{"sampled_softmax_uniform", Norm::Pre, 3};
  ss.loss = LossKind::SampledSoftmax;
  add(ss);
  Case pop = ss;
  pop.name = "sampled_softmax_popularity_two_threads", pop.popularity = true, pop.threads = 2;
  add(pop);
  Case gb{"gbce_hits", Norm::Post, 2};
  gb.loss = LossKind::Gbce;
  add(gb);
  Case two{"paper_all_options_two_threads", Norm::Paper, 3, 20, Activation::Gelu, true, true, true};
  two.threads = 2;
  add(two);
  return v;
}
}  // namespace

INSTANTIATE_TEST_SUITE_P(Options, FusedStep, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& i) { return i.param.name; });

TEST(FusedStepThreads, TwoThreadsGiveTheOneThreadStep) {
  // The runs of two threads sum their weight gradients at the end: the same step to float rounding.
  Case c{"two", Norm::Pre, 2};
  torch::manual_seed(5);
  SASRec model(options_of(c));
  const StepResult one = step(model, c, true);
  c.threads = 2;
  const StepResult two = step(model, c, true);
  EXPECT_NEAR(one.loss, two.loss, 1e-6 * std::abs(one.loss));
  for (const auto& [name, g] : one.grads) EXPECT_LT(rel(two.grads.at(name), g), 1e-6) << name;
  // The tables are scattered by ranges of their rows, each row's sum in token order: the same floats.
  const char* item_table = one.grads.count("rows") ? "rows" : "item.weight";  // a batch-local table, or M
  for (const char* table : {item_table, "position.weight"})
    EXPECT_TRUE(torch::equal(two.grads.at(table), one.grads.at(table))) << table;
}

TEST(FusedStepRows, ReadingTheRowsOfMInPlaceGivesTheCopiedTablesStep) {
  // The trainer's fused step reads M[ids] through the ids instead of a gathered copy: the same floats.
  for (const LossKind loss : {LossKind::Bce, LossKind::Gbce, LossKind::SampledSoftmax}) {
    Case c{"rows", Norm::Pre, 2};
    c.loss = loss;
    torch::manual_seed(9);
    SASRec model(options_of(c));
    model->train();
    const SampledTerms terms{{}, {}, loss == LossKind::Gbce ? gbce_beta(4, kItems, 0.75) : 1.0};
    auto run = [&](bool in_place) {
      Inputs in = inputs_of(c);
      for (auto& p : model->parameters()) p.mutable_grad().reset();
      model->reseed_dropout(0xabc, 4);
      const std::vector<torch::Tensor*> parts{&in.packing.items, &in.pos, &in.neg, &in.shared};
      FusedSASRec fused(model, loss);
      StepResult r;
      if (in_place) {
        const torch::Tensor ids = unique_and_remap(parts, model->item_weight().size(0));
        const auto out = fused.forward_backward(in.packing, in.users, model->item_weight(), in.pos, in.neg,
                                                in.shared, terms, 0.1, ids);
        r.loss = out.loss_sum, r.grads["rows"] = out.rows_grad.clone();
      } else {
        ItemRows rows = gather_item_rows(model->item_weight(), parts);
        r.loss = fused.forward_backward(in.packing, in.users, rows.table, in.pos, in.neg, in.shared, terms, 0.1)
                     .loss_sum;
        r.grads["rows"] = rows.table.grad().clone();
      }
      for (auto& p : model->named_parameters())
        if (p.value().grad().defined()) r.grads[p.key()] = p.value().grad().clone();
      return r;
    };
    const StepResult copied = run(false), in_place = run(true);
    EXPECT_EQ(copied.loss, in_place.loss) << loss_name(loss);
    EXPECT_EQ(in_place.grads.count("item.weight"), 0u) << "M's own gradient is not set";
    ASSERT_EQ(copied.grads.size(), in_place.grads.size());
    for (const auto& [name, g] : copied.grads)
      EXPECT_TRUE(torch::equal(in_place.grads.at(name), g)) << loss_name(loss) << " " << name;
  }
}

TEST(FusedStepThreads, TwoThreadsComputeTheRunsOnTwoThreads) {
  // at::parallel_for is inline `#pragma omp parallel`: a library compiled without
  // OpenMP runs every run on the calling thread, and the test above still passes.
  Case c{"on_two", Norm::Post, 2};
  torch::manual_seed(8);
  SASRec model(options_of(c));
  Inputs in = inputs_of(c);
  model->train();
  for (const int threads : {1, 2}) {
    at::set_num_threads(threads);
    FusedSASRec fused(model, c.loss);
    const auto r = fused.forward_backward(in.packing, in.users, model->item_weight(), in.pos, in.neg, in.shared,
                                          SampledTerms{in.pos_log_q, in.shared_log_q, 1.0}, 1.0);
    at::set_num_threads(1);
    EXPECT_EQ(r.threads, threads);
  }
}

TEST(FusedStepThreads, RepeatedStepsAreIdentical) {
  // Same inputs and dropout key twice: bit-identical (nothing carried over in the arena or the gradients).
  Case c{"again", Norm::Post, 1};
  c.threads = 2;
  torch::manual_seed(6);
  SASRec model(options_of(c));
  const StepResult a = step(model, c, true), b = step(model, c, true);
  EXPECT_EQ(a.loss, b.loss);
  for (const auto& [name, g] : a.grads) EXPECT_TRUE(torch::equal(b.grads.at(name), g)) << name;
}

TEST(FusedKernelsConfig, ParsesAndRefusesWhatItCannotRun) {
  Config c = parse_config("model:\n  kernels: fused\n", "t");
  EXPECT_EQ(c.model.kernels, Kernels::Fused);
  EXPECT_EQ(parse_config("", "t").model.kernels, Kernels::Auto);
  EXPECT_THROW(parse_config("model:\n  kernels: fast\n", "t"), Error);
  try {  // the choice's name table: its names, and the nearest one
    parse_config("model:\n  kernels: fusd\n", "t");
    ADD_FAILURE() << "kernels: fusd was accepted";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("one of auto, fused, autograd"), std::string::npos) << msg;
    EXPECT_NE(msg.find("did you mean 'fused'"), std::string::npos) << msg;
  }
  EXPECT_STREQ(kernels_name(Kernels::Autograd), "autograd");
  EXPECT_NE(to_yaml(c).find("kernels: fused"), std::string::npos);
  EXPECT_EQ(fused_unsupported(c, torch::Device(torch::kCPU)), "");
  EXPECT_NE(fused_unsupported(c, torch::Device(torch::kCUDA, 0)).find("CPU"), std::string::npos);
  c.runtime.precision = Precision::Bf16;
  EXPECT_NE(fused_unsupported(c, torch::Device(torch::kCPU)).find("bf16"), std::string::npos);
  c.runtime.precision = Precision::Fp32;
  c.runtime.attention = AttentionKernel::Tensor;
  EXPECT_NE(fused_unsupported(c, torch::Device(torch::kCPU)).find("runtime.attention"), std::string::npos);
  // validate() names the key (data.path first: a file that exists).
  Config v = parse_config(
      "", "t",
      {"data.path=" + std::string(SASREC_SOURCE_DIR) + "/README.md", "model.kernels=fused", "runtime.precision=bf16"});
  try {
    v.validate();
    ADD_FAILURE() << "fused with bf16 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.kernels"), std::string::npos) << e.what();
  }
}

TEST(FusedDropout, KeepsExactlyTheElementsOfTheMaskStream) {
  // dropout_apply hashes whole blocks of words; every start and length (within a word, across block
  // boundaries, with and without the mask kept) must give the scalar definition, dropout_keeps.
  const uint64_t key = 0x5eed;
  const uint32_t threshold = dropout_threshold(0.4);
  for (int64_t first : {0, 1, 2, 3, 5, 250, 1003})
    for (int64_t count : {0, 1, 3, 4, 7, 64, 255, 256, 257, 1000}) {
      std::vector<float> x(count, 1.5f), y(count, 1.5f);
      std::vector<uint8_t> keep(count, 7);
      fused::dropout_apply(x.data(), count, first, key, threshold, 2.0f, keep.data());
      fused::dropout_apply(y.data(), count, first, key, threshold, 2.0f, nullptr);
      int64_t kept = 0;
      for (int64_t i = 0; i < count; ++i) {
        const bool k = dropout_keeps(key, first + i, threshold);
        kept += k;
        ASSERT_EQ(x[i], k ? 3.0f : 0.0f) << "first " << first << ", count " << count << ", element " << i;
        ASSERT_EQ(y[i], x[i]) << "first " << first << ", count " << count << ", element " << i;
        ASSERT_EQ(keep[i], k ? 1 : 0) << "first " << first << ", count " << count << ", element " << i;
      }
      if (count == 1000) EXPECT_NEAR(static_cast<double>(kept) / count, 0.6, 0.06);
    }
}

TEST(FusedAdamRows, DenseStepFromRowsEqualsTheDenseStepBitForBit) {
  // Adam on a table whose gradient lives in a few rows: step_dense_rows against step() on the dense gradient,
  // on a small table and on a table of several pieces (16k elements each) taken by two threads.
  auto make = [](torch::Tensor p) {
    std::vector<torch::optim::OptimizerParamGroup> g;
    g.emplace_back(std::vector<torch::Tensor>{p},
                   std::make_unique<torch::optim::AdamOptions>(torch::optim::AdamOptions(1e-2).weight_decay(0.05)));
    return std::make_unique<FusedAdam>(std::move(g), torch::optim::AdamOptions(1e-2));
  };
  const int threads = at::get_num_threads();
  for (const auto& [R, d, team] : {std::tuple<int64_t, int64_t, int>{30, 5, 1}, {2000, 50, 2}}) {
    at::set_num_threads(team);
    torch::manual_seed(8);
    auto a = torch::randn({R, d}), b = a.clone();
    a.requires_grad_(true), b.requires_grad_(true);
    auto dense = make(a), rows = make(b);
    for (int step = 0; step < 6; ++step) {
      // Ids at both ends, adjacent ones, and (on the large table) rows on both sides of pieces' edges.
      auto ids = step % 2 ? torch::tensor({int64_t{0}, int64_t{7}, int64_t{8}, R - 1})
                          : std::get<0>(torch::randperm(R, torch::kInt64).slice(0, 0, R / 3).sort());
      auto g = torch::randn({ids.size(0), d});
      a.mutable_grad() = torch::zeros({R, d}).index_copy_(0, ids, g);
      dense->step();
      rows->step_dense_rows(b, ids, g);
      ASSERT_TRUE(torch::equal(a, b)) << R << " x " << d << ", step " << step << ": "
                                      << (a - b).abs().max().item<float>();
    }
    EXPECT_THROW(rows->step_dense_rows(b, torch::tensor({5, 2}, torch::kInt64), torch::zeros({2, d})), Error);
  }
  at::set_num_threads(threads);
}
