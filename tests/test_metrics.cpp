// test_metrics.cpp: rank metrics on known ranks and hand-worked ties, the
// harmonic numbers against direct sums, the full-catalog kernels (blocked
// and tensor ops) and the sampled one against a brute force over exact
// integer scores, and the evaluator against a brute-force ranking computed
// here by sorting full score vectors and against closed forms for a model
// whose scores are all equal.
#include <gtest/gtest.h>

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <limits>
#include <set>

#include "sasrec/comm.h"
#include "sasrec/error.h"
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

TEST(RankMetrics, TiesGiveTheExpectedMetricOfARandomTieBreak) {
  // 2 candidates above the target, 3 level with it: the target's 0-based rank is 2, 3, 4 or 5, each 1/4.
  RankMetrics m({1, 5, 10});
  m.add(TargetRank{2, 3, false});
  auto v = m.means();
  EXPECT_DOUBLE_EQ(v["hr@1"], 0.0);
  EXPECT_DOUBLE_EQ(v["hr@5"], 3.0 / 4);  // ranks 2, 3, 4
  EXPECT_DOUBLE_EQ(v["hr@10"], 1.0);
  EXPECT_NEAR(v["ndcg@5"], (1 / std::log2(4.0) + 1 / std::log2(5.0) + 1 / std::log2(6.0)) / 4, 1e-15);
  EXPECT_NEAR(v["ndcg@10"], (1 / std::log2(4.0) + 1 / std::log2(5.0) + 1 / std::log2(6.0) + 1 / std::log2(7.0)) / 4,
              1e-15);
  EXPECT_NEAR(v["mrr"], (1.0 / 3 + 1.0 / 4 + 1.0 / 5 + 1.0 / 6) / 4, 1e-15);
  EXPECT_EQ(m.nonfinite_users(), 0);
  // Everything tied among 100 candidates: HR@k = k / 101, whatever the tie-break.
  RankMetrics flat({10});
  flat.add(TargetRank{0, 100, false});
  EXPECT_NEAR(flat.means()["hr@10"], 10.0 / 101, 1e-15);
  double ndcg = 0, mrr = 0;
  for (int r = 0; r < 101; ++r) ndcg += r < 10 ? 1 / std::log2(r + 2.0) : 0, mrr += 1.0 / (r + 1);
  EXPECT_NEAR(flat.means()["ndcg@10"], ndcg / 101, 1e-15);
  EXPECT_NEAR(flat.means()["mrr"], mrr / 101, 1e-15);
}

TEST(RankMetrics, HugeTiesUseHarmonicNumbersThatMatchDirectSums) {
  for (int64_t n : {0, 1, 2, 10, 255, 256, 257, 1000, 100000, 3000000}) {
    long double direct = 0;
    for (int64_t k = n; k >= 1; --k) direct += 1.0L / static_cast<long double>(k);
    EXPECT_NEAR(harmonic_number(n), static_cast<double>(direct), 1e-13 * (1 + static_cast<double>(direct))) << n;
  }
  // 7 above, a million level: MRR = (H(1000008) - H(7)) / 1000001, summed directly here.
  RankMetrics m({10});
  m.add(TargetRank{7, 1000000, true});
  long double direct = 0;
  for (int64_t r = 7 + 1000000; r >= 7; --r) direct += 1.0L / static_cast<long double>(r + 1);
  EXPECT_NEAR(m.means()["mrr"], static_cast<double>(direct / 1000001), 1e-15);
  EXPECT_NEAR(m.means()["hr@10"], 3.0 / 1000001, 1e-18);  // ranks 7, 8, 9
  EXPECT_EQ(m.nonfinite_users(), 1);
}

TEST(RankMetrics, NoUserMeansNoFigure) {
  RankMetrics m({10});
  EXPECT_EQ(m.count(), 0);
  EXPECT_TRUE(m.means().empty()) << "a mean over nobody is not 0";
}

TEST(RankKernels, BlockedTensorOpsAndSampledFollowOneRule) {
  // Integer-valued vectors: every score is exact in float32, so equal means equal.
  torch::manual_seed(3);
  const int64_t n = 70, items = 10000, D = 4;  // 2 row blocks, 10 column blocks; 3 chunks of 4096 in tensor ops
  auto h = torch::randint(-2, 3, {n, D}).to(torch::kFloat32);
  auto w = torch::randint(-2, 3, {items + 1, D}).to(torch::kFloat32);
  w[0].zero_();
  w[17][1] = std::numeric_limits<float>::quiet_NaN();  // one item's score is NaN for everyone
  h[5][0] = std::numeric_limits<float>::infinity();    // one user's scores are all non-finite
  std::vector<int64_t> target(n);
  std::vector<std::vector<int32_t>> masked(n);
  const auto ha = h.accessor<float, 2>(), wa = w.accessor<float, 2>();
  auto score = [&](int64_t r, int64_t i) {  // exact (small integers), NaN and Inf as IEEE gives them
    double s = 0;
    for (int64_t d = 0; d < D; ++d) s += static_cast<double>(ha[r][d]) * wa[i][d];
    return s;
  };
  auto ts = torch::empty({n}, torch::kFloat32);
  for (int64_t r = 0; r < n; ++r) {
    target[r] = 1 + (r * 7919) % items;
    masked[r] = {0, static_cast<int32_t>(target[r])};
    for (int k = 0; k < 5; ++k) masked[r].push_back(static_cast<int32_t>(1 + (r * 31 + k * 977) % items));
    std::sort(masked[r].begin(), masked[r].end());
    masked[r].erase(std::unique(masked[r].begin(), masked[r].end()), masked[r].end());
    ts[r] = static_cast<float>(score(r, target[r]));
  }
  // The rule, by brute force: NaN and larger above, equal level, a non-finite target below all.
  std::vector<TargetRank> want(n);
  for (int64_t r = 0; r < n; ++r) {
    const double t = ts.data_ptr<float>()[r];
    for (int64_t i = 1; i <= items; ++i) {
      const double s = score(r, i);
      want[r].nonfinite = want[r].nonfinite || !std::isfinite(s);
      if (std::binary_search(masked[r].begin(), masked[r].end(), static_cast<int32_t>(i))) continue;
      want[r].higher += !(s <= t);
      want[r].ties += s == t;
    }
    if (!std::isfinite(t)) want[r] = TargetRank{items + 1 - static_cast<int64_t>(masked[r].size()), 0, true};
  }
  EXPECT_TRUE(want[5].nonfinite && want[5].ties == 0);
  int64_t tied_users = 0;
  for (const auto& x : want) tied_users += x.ties > 0;
  EXPECT_GT(tied_users, n / 2) << "the input should exercise ties";
  const auto blocked = full_ranks_blocked(h, w, ts, masked);
  const auto tensor = full_ranks_tensor_ops(h, w, ts, masked, /*memory_mb=*/1);
  for (int64_t r = 0; r < n; ++r) {
    for (const auto* got : {&blocked[r], &tensor[r]}) {
      EXPECT_EQ(got->higher, want[r].higher) << "user " << r << (got == &blocked[r] ? " blocked" : " tensor ops");
      EXPECT_EQ(got->ties, want[r].ties) << "user " << r;
      EXPECT_EQ(got->nonfinite, want[r].nonfinite) << "user " << r;
    }
  }
  // Sampled, hand-worked: target 1 against {2, 1, 1, NaN} -> 2 above (2, NaN), 2 level; a NaN target below all 4.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto neg = torch::tensor({2.f, 1.f, 1.f, nan, 0.f, 0.f, 0.f, 0.f, 5.f, 1.f, 1.f, 1.f}).view({3, 4});
  auto sampled = sampled_ranks(torch::tensor({1.f, 0.f, nan}), neg);
  EXPECT_EQ(sampled[0].higher, 2);
  EXPECT_EQ(sampled[0].ties, 2);
  EXPECT_TRUE(sampled[0].nonfinite);
  EXPECT_EQ(sampled[1].higher, 0);
  EXPECT_EQ(sampled[1].ties, 4);
  EXPECT_FALSE(sampled[1].nonfinite);
  EXPECT_EQ(sampled[2].higher, 4);
  EXPECT_EQ(sampled[2].ties, 0);
  EXPECT_TRUE(sampled[2].nonfinite);
}

namespace {

// Users with sequences of several lengths; items 1..num_items.
Shard make_shard(int64_t num_items = 40) {
  return test::make_shard({{1, 2, 3, 4, 5},
                           {7, 7, 8},
                           {9, 10},
                           {11, 12, 13, 14, 15, 16, 17, 18, 19},
                           {3, 1, 4, 1, 5, 9, 2, 6},
                           {20, 21, 22, 23},
                           {40, 39, 38}},
                          num_items);
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

TEST(MetricsWriter, AppendsOnlyWholeLinesAndIsHeldByOneWriter) {
  test::TempDir dir;
  const std::string path = dir.file("m.jsonl");
  // A line a killed writer cut short is ended before the next one.
  test::write_text(path, "{\"a\":1}\n{\"b\"");
  MetricsWriter(path, /*append=*/true).write({{"c", 2}});
  EXPECT_EQ(test::read_text(path), "{\"a\":1}\n{\"b\"\n{\"c\":2}\n");
  {
    MetricsWriter w(path, /*append=*/true);
    try {
      MetricsWriter second(path, /*append=*/true);
      ADD_FAILURE() << "two writers on one metrics file";
    } catch (const sasrec::Error& e) {
      EXPECT_NE(std::string(e.what()).find("is being written by another running process"), std::string::npos)
          << e.what();
    }
    // Streams are written as such, by as many writers as like: nothing to lock or move.
    MetricsWriter a("/dev/null", false), b("/dev/null", false);
    a.write({{"x", 1}});
    b.write({{"x", 1}});
  }
  // A write that fails (a file-size limit: EFBIG, as ENOSPC on a full disk) is taken back whole.
  const std::string before = test::read_text(path);
  const pid_t child = ::fork();
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);
    const rlimit limit{static_cast<rlim_t>(before.size() + 8), static_cast<rlim_t>(before.size() + 8)};
    ::setrlimit(RLIMIT_FSIZE, &limit);
    try {
      MetricsWriter(path, /*append=*/true).write({{"long", std::string(100, 'x')}});
    } catch (const sasrec::Error& e) {
      ::_exit(std::string(e.what()).find("its earlier lines are intact") != std::string::npos ? 0 : 2);
    }
    ::_exit(1);  // the write went through: not what the limit allows
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(test::read_text(path), before) << "a partial line was left";
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
  cfg.protocols = {Protocol::Full};
  cfg.batch_users = 3;
  cfg.memory_mb = 1;
  auto comm = make_single_communicator();
  for (std::string split : {"valid", "test"}) {
    Evaluator ev(data, cfg, 1, *comm);
    std::vector<int64_t> ranks;
    for (const TargetRank& r : ev.ranks(model, split, Protocol::Full)) ranks.push_back(r.higher + r.ties);
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
      int64_t expected =
          std::find_if(cand.begin(), cand.end(), [&](auto& p) { return p.second == target; }) - cand.begin();
      // Scores within float32 rounding of the target's may order either way.
      int64_t near = 0;
      for (auto& c : cand)
        near += c.second != target && std::abs(c.first - sc[target]) < 1e-5 * (1 + std::abs(sc[target]));
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
  cfg.protocols = {Protocol::Sampled};
  cfg.sampled_negatives = 10;
  auto comm = make_single_communicator();
  Evaluator a(data, cfg, 3, *comm), b(data, cfg, 3, *comm);
  auto ra = a.ranks(model, "test", Protocol::Sampled), rb = b.ranks(model, "test", Protocol::Sampled);
  ASSERT_EQ(ra.size(), rb.size());
  for (size_t i = 0; i < ra.size(); ++i) {
    EXPECT_EQ(ra[i].higher, rb[i].higher);
    EXPECT_EQ(ra[i].ties, rb[i].ties);
    EXPECT_LE(ra[i].higher + ra[i].ties, 10);
  }
}

namespace {

// A model for make_shard()'s 40 items whose item table is all `value`, and
// an evaluation of both protocols with 20 sampled negatives at cutoffs `ks`.
SASRec model_with_items(float value) {
  ModelConfig m;
  m.hidden = 8;
  m.maxlen = 5;
  SASRec model(SASRecOptions::from(m, 40, 7));
  torch::NoGradGuard ng;
  model->item_weight().fill_(value);
  return model;
}

EvalConfig both_protocols(std::vector<int> ks) {
  EvalConfig cfg;
  cfg.protocols = {Protocol::Full, Protocol::Sampled};
  cfg.ks = std::move(ks);
  cfg.sampled_negatives = 20;
  return cfg;
}

}  // namespace

TEST(Evaluator, EqualScoresGiveKOverTheCandidatesOnEveryProtocol) {
  // The item table at zero: every score is exactly 0, every candidate level with the target.
  SplitData data(make_shard());
  SASRec model = model_with_items(0.0f);
  const EvalConfig cfg = both_protocols({10});
  auto comm = make_single_communicator();
  for (std::string split : {"valid", "test"}) {
    // Closed forms: with c candidates besides the target, each of the c+1 places has probability 1/(c+1).
    double hr = 0, ndcg = 0, mrr = 0;
    int64_t users = 0;
    for (int64_t u : data.holdout_users()) {
      ItemSpan full = data.full(u);
      const int64_t hist = full.size - (split == "test" ? 1 : 2);
      std::set<int32_t> ranked_out(full.data, full.data + hist + 1);  // the history and the target
      const int64_t places = 40 - static_cast<int64_t>(ranked_out.size()) + 1;
      for (int64_t r = 0; r < places; ++r) {
        if (r < 10) hr += 1.0 / places, ndcg += 1 / std::log2(r + 2.0) / places;
        mrr += 1.0 / (r + 1) / places;
      }
      ++users;
    }
    Evaluator ev(data, cfg, 1, *comm);
    auto results = ev.evaluate(model, split);
    ASSERT_EQ(results.size(), 2u);
    auto full = results[0].metrics.means(), sampled = results[1].metrics.means();
    EXPECT_EQ(results[0].metrics.count(), users);
    EXPECT_NEAR(full["hr@10"], hr / users, 1e-12) << split;
    EXPECT_NEAR(full["ndcg@10"], ndcg / users, 1e-12) << split;
    EXPECT_NEAR(full["mrr"], mrr / users, 1e-12) << split;
    EXPECT_NEAR(sampled["hr@10"], 10.0 / 21, 1e-12) << split;  // 20 negatives and the target: 21 places
    EXPECT_EQ(results[0].metrics.nonfinite_users(), 0);
  }
}

TEST(Evaluator, NonFiniteScoresAreRankedLastAndCounted) {
  SplitData data(make_shard());
  SASRec model = model_with_items(std::numeric_limits<float>::quiet_NaN());  // exploded parameters
  const EvalConfig cfg = both_protocols({1, 10});
  auto comm = make_single_communicator();
  Evaluator ev(data, cfg, 1, *comm);
  for (const auto& r : ev.evaluate(model, "test")) {
    const int64_t users = static_cast<int64_t>(data.holdout_users().size());
    EXPECT_EQ(r.metrics.count(), users);
    EXPECT_EQ(r.metrics.nonfinite_users(), users) << r.protocol;
    // Below every candidate (at least 20 of them): outside the top 10.
    EXPECT_EQ(r.metrics.means()["hr@10"], 0.0) << r.protocol;
  }
}

TEST(Evaluator, MaxUsersSubsamples) {
  test::Sequences seqs(2000);
  for (int u = 0; u < 2000; ++u)
    for (int t = 0; t < 4; ++t) seqs[u].push_back(1 + (u + t) % 50);
  SplitData data(test::make_shard(seqs, 50));
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
  const std::vector<std::vector<std::pair<int32_t, int64_t>>> users = {
      {{1, 10}, {2, 20}, {3, 150}, {4, 210}, {5, 220}, {6, 230}},
      {{7, 50}, {8, 210}},
      {{9, 250}, {10, 260}, {11, 270}},
      {{12, 10}, {13, 20}, {14, 30}, {15, 40}, {16, 50}, {17, 60}, {18, 205}, {19, 206}},
      {{30, 110}, {31, 120}}};
  test::Sequences seqs;
  test::Times times;
  for (const auto& u : users) {
    seqs.emplace_back(), times.emplace_back();
    for (auto [item, t] : u) seqs.back().push_back(item), times.back().push_back(t);
  }
  Shard s = test::make_shard(seqs, 60, 0, 0, times);
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
    cfg.protocols = {Protocol::Full};
    cfg.batch_users = 2;
    auto comm = make_single_communicator();
    Evaluator ev(data, cfg, 1, *comm);
    std::vector<int64_t> ranks;  // no ties in float64 terms: the count above (ties would add half their count)
    for (const TargetRank& r : ev.ranks(model, "test", Protocol::Full)) ranks.push_back(r.higher + r.ties);
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
  SplitData data(test::make_shard({{1, 2, 3, 4, 5}}, 12));
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
  cfg.protocols = {Protocol::Sampled};
  cfg.sampled_negatives = 100;
  Evaluator sequence(data, cfg, 1, *comm);
  const auto at_top = sequence.ranks(model, "test", Protocol::Sampled);
  ASSERT_EQ(at_top.size(), 1u);
  EXPECT_EQ(at_top[0].higher, 0);
  EXPECT_EQ(at_top[0].ties, 0);
  cfg.sampled_exclude = SampledExclude::Train;
  Evaluator train(data, cfg, 1, *comm);
  EXPECT_GT(train.ranks(model, "test", Protocol::Sampled)[0].higher, 0);
}
