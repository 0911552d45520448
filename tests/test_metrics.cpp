// test_metrics.cpp: rank metrics on known ranks, and the evaluator against a
// brute-force ranking computed here by sorting full score vectors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "sasrec/comm.h"
#include "sasrec/evaluator.h"
#include "sasrec/metrics.h"
#include "test_util.h"

using namespace sasrec;

TEST(RankMetrics, KnownRanks) {
  RankMetrics m({1, 10});
  for (int64_t r : {0, 1, 4, 9, 10, 50}) m.add(r);
  auto v = m.means();
  EXPECT_EQ(m.count(), 6);
  EXPECT_DOUBLE_EQ(v["hr@1"], 1.0 / 6);
  EXPECT_DOUBLE_EQ(v["hr@10"], 4.0 / 6);
  EXPECT_NEAR(v["ndcg@10"], (1 + 1 / std::log2(3.0) + 1 / std::log2(6.0) + 1 / std::log2(11.0)) / 6, 1e-12);
  EXPECT_NEAR(v["ndcg@1"], 1.0 / 6, 1e-12);
  EXPECT_NEAR(v["mrr"], (1 + 0.5 + 0.2 + 0.1 + 1.0 / 11 + 1.0 / 51) / 6, 1e-12);
  // RecBole's names: Recall@k is HR@k with one held-out item; MRR@k stops at k.
  EXPECT_DOUBLE_EQ(v["recall@10"], v["hr@10"]);
  EXPECT_DOUBLE_EQ(v["recall@1"], v["hr@1"]);
  EXPECT_NEAR(v["mrr@10"], (1 + 0.5 + 0.2 + 0.1) / 6, 1e-12);
  EXPECT_NEAR(v["mrr@1"], 1.0 / 6, 1e-12);
}

namespace {

// Users with sequences of several lengths; items 1..num_items.
Shard make_shard(int64_t num_items = 40) {
  Shard s;
  s.num_items = num_items;
  std::vector<std::vector<int32_t>> seqs = {{1, 2, 3, 4, 5}, {7, 7, 8}, {9, 10}, {11, 12, 13, 14, 15, 16, 17, 18, 19},
                                            {3, 1, 4, 1, 5, 9, 2, 6}, {20, 21, 22, 23}, {40, 39, 38}};
  for (auto& q : seqs) {
    s.items.insert(s.items.end(), q.begin(), q.end());
    s.offsets.push_back(static_cast<int64_t>(s.items.size()));
  }
  s.users = {0, static_cast<int64_t>(seqs.size())};
  s.num_users_total = static_cast<int64_t>(seqs.size());
  return s;
}

}  // namespace

TEST(MetricsWriter, MakesItsFolderAndWritesOneLinePerEvent) {
  test::TempDir dir;
  const std::string path = dir.file("runs/a/metrics.jsonl");
  {
    MetricsWriter w(path, /*append=*/false);
    w.write({{"event", "x"}, {"n", 1}});
  }
  MetricsWriter(path, /*append=*/true).write({{"event", "y"}});
  EXPECT_EQ(test::read_text(path), "{\"event\":\"x\",\"n\":1}\n{\"event\":\"y\"}\n");
}

TEST(Evaluator, FullRanksEqualBruteForce) {
  torch::manual_seed(7);
  // 200k items, 3 users a chunk, 1 MB a score block: 87,381 items a block, 3 blocks.
  const int64_t num_items = 200000;
  SplitData data(make_shard(num_items));
  SASRecOptions o;
  o.num_items = num_items;
  o.hidden = 8;
  o.heads = 2;
  o.maxlen = 4;  // shorter than some histories: truncation is exercised
  SASRec model(o);
  EvalConfig cfg;
  cfg.protocols = {"full"};
  cfg.batch_users = 3;
  cfg.memory_mb = 1;
  auto comm = make_single_communicator();
  for (std::string split : {"valid", "test"}) {
    Evaluator ev(data, cfg, 1, *comm);
    auto ranks = ev.ranks(model, split, "full");
    ASSERT_EQ(ranks.size(), data.holdout_users().size());
    model->eval();
    torch::NoGradGuard ng;
    for (size_t i = 0; i < ranks.size(); ++i) {
      ItemSpan full = data.full(data.holdout_users()[i]);
      const int64_t hist = full.size - (split == "test" ? 1 : 2);
      std::vector<int64_t> input(full.data + std::max<int64_t>(0, hist - 4), full.data + hist);
      auto h = model->forward(torch::tensor(input, torch::kInt64).unsqueeze(0)).select(1, -1).squeeze(0);
      auto scores = torch::matmul(model->item_weight().to(torch::kFloat64), h.to(torch::kFloat64));  // [I+1]
      const int32_t target = full.data[hist];
      std::vector<bool> excluded(num_items + 1, false);
      excluded[0] = true;
      for (int64_t t = 0; t < hist; ++t) excluded[full.data[t]] = true;
      std::vector<std::pair<double, int>> cand;
      const double* sc = scores.data_ptr<double>();
      for (int item = 1; item <= num_items; ++item)
        if (!excluded[item] || item == target) cand.push_back({sc[item], item});
      std::sort(cand.rbegin(), cand.rend());
      int64_t expected = std::find_if(cand.begin(), cand.end(), [&](auto& p) { return p.second == target; }) - cand.begin();
      // Scores within float32 rounding of the target's may order either way.
      int64_t near = 0;
      for (auto& c : cand) near += c.second != target && std::abs(c.first - sc[target]) < 1e-5 * (1 + std::abs(sc[target]));
      EXPECT_LE(std::abs(ranks[i] - expected), near) << split << " user " << i << " expected " << expected;
    }
  }
}

TEST(Evaluator, SampledRanksAreBoundedAndDeterministic) {
  torch::manual_seed(8);
  SplitData data(make_shard());
  SASRecOptions o;
  o.num_items = 40;
  o.hidden = 8;
  o.maxlen = 5;
  SASRec model(o);
  EvalConfig cfg;
  cfg.protocols = {"sampled"};
  cfg.sampled_negatives = 10;
  auto comm = make_single_communicator();
  Evaluator a(data, cfg, 3, *comm), b(data, cfg, 3, *comm);
  auto ra = a.ranks(model, "test", "sampled");
  EXPECT_EQ(ra, b.ranks(model, "test", "sampled"));
  for (auto r : ra) EXPECT_LE(r, 10);
}

TEST(Evaluator, MaxUsersSubsamples) {
  Shard s;
  s.num_items = 50;
  for (int u = 0; u < 2000; ++u) {
    for (int t = 0; t < 4; ++t) s.items.push_back(1 + (u + t) % 50);
    s.offsets.push_back(static_cast<int64_t>(s.items.size()));
  }
  s.users = {0, 2000};
  s.num_users_total = 2000;
  SplitData data(std::move(s));
  SASRecOptions o;
  o.num_items = 50;
  o.hidden = 4;
  o.maxlen = 3;
  SASRec model(o);
  EvalConfig cfg;
  cfg.max_users = 500;
  auto comm = make_single_communicator();
  Evaluator ev(data, cfg, 1, *comm);
  auto results = ev.evaluate(model, "valid");
  EXPECT_NEAR(results[0].metrics.count(), 500, 80);
}

namespace {
// A log with times for the time split: per user, items and their times;
// valid from 100, test from 200 (several test cases for some users).
SplitData timed_split(EvalTargets targets) {
  Shard s;
  s.num_items = 60;
  const std::vector<std::vector<std::pair<int32_t, int64_t>>> users = {
      {{1, 10}, {2, 20}, {3, 150}, {4, 210}, {5, 220}, {6, 230}},
      {{7, 50}, {8, 210}},
      {{9, 250}, {10, 260}, {11, 270}},
      {{12, 10}, {13, 20}, {14, 30}, {15, 40}, {16, 50}, {17, 60}, {18, 205}, {19, 206}},
      {{30, 110}, {31, 120}}};
  for (const auto& u : users) {
    for (auto [item, t] : u) s.items.push_back(item), s.timestamps.push_back(t);
    s.offsets.push_back(static_cast<int64_t>(s.items.size()));
  }
  s.users = {0, static_cast<int64_t>(users.size())};
  s.num_users_total = static_cast<int64_t>(users.size());
  SplitOptions o;
  o.kind = SplitKind::Time;
  o.valid_from = 100;
  o.test_from = 200;
  o.targets = targets;
  return SplitData(std::move(s), o);
}
}  // namespace

TEST(Evaluator, TimeSplitCasesEqualBruteForce) {
  // Every test case is ranked from its own history (the last maxlen items
  // before it), that history excluded, as a brute-force sort here finds.
  torch::manual_seed(9);
  for (EvalTargets targets : {EvalTargets::All, EvalTargets::First}) {
    SplitData data = timed_split(targets);
    SASRecOptions o;
    o.num_items = 60;
    o.hidden = 8;
    o.heads = 2;
    o.maxlen = 4;  // shorter than some histories
    SASRec model(o);
    EvalConfig cfg;
    cfg.protocols = {"full"};
    cfg.batch_users = 2;
    auto comm = make_single_communicator();
    Evaluator ev(data, cfg, 1, *comm);
    auto ranks = ev.ranks(model, "test", "full");
    const auto& cases = data.cases(Holdout::Test);
    ASSERT_EQ(ranks.size(), cases.size());
    ASSERT_EQ(cases.size(), targets == EvalTargets::All ? 8u : 4u);
    model->eval();
    torch::NoGradGuard ng;
    for (size_t i = 0; i < cases.size(); ++i) {
      ItemSpan full = data.full(cases[i].user);
      const int64_t hist = cases[i].target;
      std::vector<int64_t> input(full.data + std::max<int64_t>(0, hist - 4), full.data + hist);
      auto h = model->forward(torch::tensor(input, torch::kInt64).unsqueeze(0)).select(1, -1).squeeze(0);
      auto scores = torch::matmul(model->item_weight().to(torch::kFloat64), h.to(torch::kFloat64));
      const double* sc = scores.data_ptr<double>();
      const int32_t target = full.data[hist];
      std::set<int32_t> excluded(full.data, full.data + hist);
      int64_t expected = 0, near = 0;  // scores within float32 rounding of the target's may order either way
      for (int item = 1; item <= 60; ++item) {
        if (item == target || excluded.count(item)) continue;
        expected += sc[item] > sc[target];
        near += std::abs(sc[item] - sc[target]) < 1e-5 * (1 + std::abs(sc[target]));
      }
      EXPECT_LE(std::abs(ranks[i] - expected), near) << "case " << i << " expected " << expected;
    }
    auto results = ev.evaluate(model, "test");
    EXPECT_EQ(results[0].metrics.count(), static_cast<int64_t>(cases.size()));
  }
}

TEST(Evaluator, SampledNegativesFromTheTrainPartCanBeTheHeldOutItems) {
  // User 0: train 1 2 3, valid 4, test 5 (leave-one-out). Rows of items 5..12
  // (none in the test input 1 2 3 4) are set so that s(4) > s(5) > s(6..12).
  // Excluding the whole sequence, the 100 negatives come from 6..12: rank 0.
  // Excluding only the train part (the authors' code, the port), 4 can be
  // drawn and scores above the target.
  Shard s;
  s.num_items = 12;
  s.items = {1, 2, 3, 4, 5};
  s.offsets = {0, 5};
  s.users = {0, 1};
  s.num_users_total = 1;
  SplitData data(std::move(s));
  torch::manual_seed(4);
  SASRecOptions o;
  o.num_items = 12;
  o.hidden = 8;
  o.maxlen = 5;
  SASRec model(o);
  model->eval();
  {
    torch::NoGradGuard ng;
    auto h = model->forward(torch::tensor({{1, 2, 3, 4}}, torch::kInt64)).select(1, -1).squeeze(0);  // [D]
    const auto& w = model->item_weight();
    const double s4 = (h * w[4]).sum().item<double>();
    auto unit = h / h.pow(2).sum();  // h . unit = 1
    w[5].copy_(unit * (s4 - 1));
    for (int i = 6; i <= 12; ++i) w[i].copy_(unit * (s4 - 2));
  }
  auto comm = make_single_communicator();
  EvalConfig cfg;
  cfg.protocols = {"sampled"};
  cfg.sampled_negatives = 100;
  Evaluator sequence(data, cfg, 1, *comm);
  EXPECT_EQ(sequence.ranks(model, "test", "sampled"), (std::vector<int64_t>{0}));
  cfg.sampled_exclude = SampledExclude::Train;
  Evaluator train(data, cfg, 1, *comm);
  EXPECT_GT(train.ranks(model, "test", "sampled")[0], 0);
}
