// test_sampler.cpp: the leave-one-out split and the batch sampler.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>

#include "sasrec/error.h"
#include "sasrec/rng.h"
#include "sasrec/sampler.h"
#include "test_util.h"

using namespace sasrec;

namespace {

// A shard that starts at global user 100 of 1000.
Shard shard_of(const std::vector<std::vector<int32_t>>& seqs, int64_t num_items) {
  return test::make_shard(seqs, num_items, /*first_user=*/100, /*total_users=*/1000);
}

Shard random_shard(int users, int num_items, uint64_t seed) {
  Rng rng(seed);
  std::vector<std::vector<int32_t>> seqs(users);
  for (auto& q : seqs) {
    const int len = 1 + static_cast<int>(rng.below(70));
    for (int t = 0; t < len; ++t) q.push_back(static_cast<int32_t>(rng.between(1, num_items)));
  }
  return shard_of(seqs, num_items);
}

// Every batch of `epoch`, built by `threads` sampler threads.
std::vector<Batch> epoch_batches(const SplitData& d, SamplerOptions o, int64_t epoch, int threads) {
  o.threads = threads;
  Sampler s(d, o);
  s.start_epoch(epoch);
  std::vector<Batch> out;
  for (int64_t i = 0; i < s.steps_per_epoch(); ++i) out.push_back(s.next());
  return out;
}

}  // namespace

namespace {
// The cases of a split as (local user, target position) pairs.
using Pairs = std::vector<std::pair<int64_t, int64_t>>;
Pairs pairs(const std::vector<EvalCase>& cases) {
  Pairs out;
  for (const auto& c : cases) out.push_back({c.user, c.target});
  return out;
}
TimeCutoff quantile(double q) {
  TimeCutoff c;
  c.kind = TimeCutoff::Kind::Quantile;
  c.quantile = q;
  c.text = "q" + std::to_string(q);
  return c;
}
}  // namespace

TEST(Split, LeaveOneOutRules) {
  SplitData d(shard_of({{5}, {5, 6}, {5, 6, 7}, {1, 2, 3, 4, 8}}, 10));
  EXPECT_EQ(d.train(0).size, 1);  // train-only
  EXPECT_EQ(d.train(1).size, 2);
  EXPECT_EQ(d.train(2).size, 1);
  EXPECT_EQ(d.train(3).size, 3);
  // valid: the second to last item from the items before it; test: the last.
  EXPECT_EQ(pairs(d.cases(Holdout::Valid)), (Pairs{{2, 1}, {3, 3}}));
  EXPECT_EQ(pairs(d.cases(Holdout::Test)), (Pairs{{2, 2}, {3, 4}}));
  EXPECT_EQ(d.full(3).data[d.cases(Holdout::Valid)[1].target], 4);
  EXPECT_EQ(d.full(3).data[d.cases(Holdout::Test)[1].target], 8);
  EXPECT_EQ(d.trainable_users(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(d.holdout_users(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(d.global_user(3), 103);
  // refit: the valid item is trained on, and nothing is validated.
  SplitOptions refit;
  refit.refit = true;
  SplitData r(shard_of({{5}, {5, 6}, {5, 6, 7}, {1, 2, 3, 4, 8}}, 10), refit);
  EXPECT_EQ(r.train(2).size, 2);
  EXPECT_EQ(r.train(3).size, 4);
  EXPECT_TRUE(r.cases(Holdout::Valid).empty());
  EXPECT_EQ(pairs(r.cases(Holdout::Test)), (Pairs{{2, 2}, {3, 4}}));
  EXPECT_EQ(r.trainable_users(), (std::vector<int64_t>{1, 2, 3}));
}

namespace {
// A hand-made log with times: valid from 100, test from 200.
//   u0  10 20 30                 all before valid_from: train only
//   u1  50 90 | 100 150 | 210    2 train, valid at 100 (on the cutoff) and 150, test at 210
//   u2  120 130                  no history before valid_from: its first interaction is no case
//   u3  250 260 270              only in test: no train part, cases from its second on
//   u4  60 70 80 | 205           a test case from a history that ends before valid_from
//   u5  100 100                  a tie on the cutoff: both valid
Shard timed_log() {
  const std::vector<std::vector<int64_t>> times{{10, 20, 30},    {50, 90, 100, 150, 210}, {120, 130},
                                                {250, 260, 270}, {60, 70, 80, 205},       {100, 100}};
  std::vector<std::vector<int32_t>> seqs;
  int32_t item = 1;
  for (const auto& t : times) {
    seqs.emplace_back();
    for (size_t i = 0; i < t.size(); ++i) seqs.back().push_back(item++);
  }
  return test::make_shard(seqs, 20, /*first_user=*/100, /*total_users=*/1000, times);
}
SplitOptions time_split(EvalTargets targets, bool refit = false) {
  SplitOptions o;
  o.kind = SplitKind::Time;
  o.valid_from = 100;
  o.test_from = 200;
  o.targets = targets;
  o.refit = refit;
  return o;
}
}  // namespace

TEST(Split, TimeSplitPutsEachInteractionInItsPeriod) {
  SplitData d(timed_log(), time_split(EvalTargets::All));
  std::vector<int64_t> train;
  for (int64_t u = 0; u < d.num_users(); ++u) train.push_back(d.train(u).size);
  EXPECT_EQ(train, (std::vector<int64_t>{3, 2, 0, 0, 3, 0}));  // only what came before valid_from
  EXPECT_EQ(d.trainable_users(), (std::vector<int64_t>{0, 1, 4}));
  EXPECT_EQ(pairs(d.cases(Holdout::Valid)), (Pairs{{1, 2}, {1, 3}, {2, 1}, {5, 1}}));
  EXPECT_EQ(pairs(d.cases(Holdout::Test)), (Pairs{{1, 4}, {3, 1}, {3, 2}, {4, 3}}));
  EXPECT_EQ(d.holdout_users(), (std::vector<int64_t>{1, 2, 3, 4, 5}));
  // u1's test case sees its whole history, the valid period's items included.
  const EvalCase c = d.cases(Holdout::Test)[0];
  EXPECT_EQ(std::vector<int32_t>(d.full(c.user).data, d.full(c.user).data + c.target),
            (std::vector<int32_t>{4, 5, 6, 7}));
  EXPECT_EQ(d.full(c.user).data[c.target], 8);
}

TEST(Split, TimeSplitFirstTargetsAndRefit) {
  SplitData first(timed_log(), time_split(EvalTargets::First));
  EXPECT_EQ(pairs(first.cases(Holdout::Valid)), (Pairs{{1, 2}, {2, 1}, {5, 1}}));
  EXPECT_EQ(pairs(first.cases(Holdout::Test)), (Pairs{{1, 4}, {3, 1}, {4, 3}}));
  SplitData refit(timed_log(), time_split(EvalTargets::All, /*refit=*/true));
  std::vector<int64_t> train;
  for (int64_t u = 0; u < refit.num_users(); ++u) train.push_back(refit.train(u).size);
  EXPECT_EQ(train, (std::vector<int64_t>{3, 4, 2, 0, 3, 2}));  // everything before test_from
  EXPECT_TRUE(refit.cases(Holdout::Valid).empty());
  EXPECT_EQ(pairs(refit.cases(Holdout::Test)), (Pairs{{1, 4}, {3, 1}, {3, 2}, {4, 3}}));
}

TEST(Split, TimeSplitRefusesAUserOutOfTimeOrder) {
  Shard s = timed_log();
  std::swap(s.timestamps[3], s.timestamps[4]);  // u1: 90 before 50
  try {
    SplitData d(std::move(s), time_split(EvalTargets::All));
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("user 101"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("csv2h5"), std::string::npos) << e.what();
  }
}

TEST(Split, QuantileCutoffsFromEveryShardsTimes) {
  // The 19 times sorted: 10 20 30 50 60 70 80 90 100 100 100 120 130 150 205 210 250 260 270.
  // q0.5: index floor(9.5) = 9 -> 100; q0.8: index floor(15.2) = 15 -> 210.
  const Shard whole = timed_log();
  const SortedTimes all(whole);
  auto count = [&](int64_t t) { return all.count_at_most(t); };
  EXPECT_EQ(resolve_cutoff(quantile(0.5), count), 100);
  EXPECT_EQ(resolve_cutoff(quantile(0.8), count), 210);
  EXPECT_EQ(resolve_cutoff(quantile(0.01), count), 10);
  EXPECT_EQ(resolve_cutoff(quantile(0.99), count), 270);
  TimeCutoff stamp;
  stamp.kind = TimeCutoff::Kind::Timestamp;
  stamp.timestamp = 1234;
  EXPECT_EQ(resolve_cutoff(stamp, count), 1234);  // a timestamp is itself
  // Two shards (users 0-2 and 3-5) counting together give the same cutoffs.
  Shard a = whole, b = whole;
  a.offsets.assign(whole.offsets.begin(), whole.offsets.begin() + 4);
  a.items.resize(a.offsets.back());
  a.timestamps.resize(a.offsets.back());
  b.timestamps.erase(b.timestamps.begin(), b.timestamps.begin() + a.offsets.back());
  const SortedTimes ta(a), tb(b);
  auto both = [&](int64_t t) { return ta.count_at_most(t) + tb.count_at_most(t); };
  EXPECT_EQ(resolve_cutoff(quantile(0.5), both), 100);
  EXPECT_EQ(resolve_cutoff(quantile(0.8), both), 210);
}

TEST(Sampler, NegativesNeverInHistory) {
  Rng rng(1);
  std::vector<int32_t> hist{2, 3, 5, 7, 11, 13};
  std::vector<int64_t> out(20000);
  sample_negatives(rng, 15, hist, static_cast<int64_t>(out.size()), out.data());
  std::set<int64_t> seen(out.begin(), out.end());
  EXPECT_EQ(seen, (std::set<int64_t>{1, 4, 6, 8, 9, 10, 12, 14, 15}));
}

TEST(Sampler, NegativesOfANearlyFullHistoryAreTheItemsLeftUniformly) {
  // 18 of 20 items seen (90%: rejection would spin): only 4 and 17 may come, each about half the time.
  Rng rng(2);
  std::vector<int32_t> hist;
  for (int32_t i = 1; i <= 20; ++i)
    if (i != 4 && i != 17) hist.push_back(i);
  std::vector<int64_t> out(4000);
  sample_negatives(rng, 20, hist, static_cast<int64_t>(out.size()), out.data());
  const auto fours = std::count(out.begin(), out.end(), 4);
  EXPECT_EQ(fours + std::count(out.begin(), out.end(), 17), 4000) << "a negative from the history";
  EXPECT_NEAR(static_cast<double>(fours) / 4000, 0.5, 0.05);  // 6 standard deviations
}

TEST(Sampler, BatchLayoutShiftedTargetsTrimmedWidth) {
  SplitData d(shard_of({{1, 2, 3, 4, 5, 6, 7}, {8, 9, 10, 11}}, 20));
  SamplerOptions o;
  o.batch_size = 2;
  o.maxlen = 10;
  Sampler s(d, o);
  s.start_epoch(1);
  Batch b = s.next();
  ASSERT_EQ(b.seq.size(0), 2);
  // user 0: train 1..5 -> inputs 1..4, targets 2..5; user 1: train 8,9 -> input 8, target 9. Width 4.
  ASSERT_EQ(b.seq.size(1), 4);
  for (int r = 0; r < 2; ++r) {
    const bool first = b.users[r].item<int64_t>() == 100;
    auto seq = b.seq[r], pos = b.pos[r], neg = b.neg[r];
    auto want_seq = first ? torch::tensor({1, 2, 3, 4}) : torch::tensor({0, 0, 0, 8});
    auto want_pos = first ? torch::tensor({2, 3, 4, 5}) : torch::tensor({0, 0, 0, 9});
    EXPECT_TRUE(torch::equal(seq, want_seq.to(torch::kInt64))) << seq;
    EXPECT_TRUE(torch::equal(pos, want_pos.to(torch::kInt64))) << pos;
    EXPECT_TRUE(torch::equal(neg == 0, pos == 0)) << neg;
  }
  EXPECT_EQ(b.targets, 5);
}

TEST(Sampler, TruncatesToMaxlen) {
  SplitData d(shard_of({{1, 2, 3, 4, 5, 6, 7, 8, 9}}, 20));
  SamplerOptions o;
  o.maxlen = 3;
  Sampler s(d, o);
  s.start_epoch(1);
  Batch b = s.next();
  // train part 1..7: the last 3 pairs are 4->5, 5->6, 6->7
  EXPECT_TRUE(torch::equal(b.seq[0], torch::tensor({4, 5, 6}).to(torch::kInt64)));
  EXPECT_TRUE(torch::equal(b.pos[0], torch::tensor({5, 6, 7}).to(torch::kInt64)));
}

TEST(Sampler, EveryTrainableUserOncePerEpoch) {
  SplitData d(random_shard(1000, 300, 5));
  SamplerOptions o;
  o.batch_size = 64;
  o.threads = 3;
  Sampler s(d, o);
  for (int epoch = 1; epoch <= 2; ++epoch) {
    s.start_epoch(epoch);
    std::multiset<int64_t> users;
    for (int64_t i = 0; i < s.steps_per_epoch(); ++i) {
      Batch b = s.next();
      EXPECT_LE(b.seq.size(0), 64);
      for (int64_t r = 0; r < b.users.size(0); ++r) users.insert(b.users[r].item<int64_t>());
    }
    std::multiset<int64_t> want;
    for (int64_t u : d.trainable_users()) want.insert(d.global_user(u));
    EXPECT_EQ(users, want) << "epoch " << epoch;
  }
}

TEST(Sampler, DeterministicWhateverTheThreadCount) {
  SplitData d(random_shard(500, 200, 6));
  auto run = [&](int threads) {
    SamplerOptions o;
    o.batch_size = 32;
    o.threads = threads;
    o.seed = 11;
    o.prefetch = 2;
    Sampler s(d, o);
    std::vector<Batch> out;
    for (int epoch = 1; epoch <= 2; ++epoch) {
      s.start_epoch(epoch);
      for (int64_t i = 0; i < s.steps_per_epoch(); ++i) out.push_back(s.next());
    }
    return out;
  };
  auto a = run(1), b = run(4);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::equal(a[i].seq, b[i].seq));
    EXPECT_TRUE(torch::equal(a[i].neg, b[i].neg));
    EXPECT_TRUE(torch::equal(a[i].users, b[i].users));
  }
  // Epochs differ in order.
  EXPECT_FALSE(torch::equal(a[0].users, a[a.size() / 2].users));
}

TEST(Sampler, NegativesAvoidEachUsersHistory) {
  SplitData d(random_shard(300, 80, 7));
  SamplerOptions o;
  o.batch_size = 50;
  Sampler s(d, o);
  s.start_epoch(1);
  for (int64_t i = 0; i < s.steps_per_epoch(); ++i) {
    Batch b = s.next();
    for (int64_t r = 0; r < b.seq.size(0); ++r) {
      const int64_t local = b.users[r].item<int64_t>() - 100;
      ItemSpan train = d.train(local);
      std::set<int64_t> hist(train.begin(), train.end());
      for (int64_t t = 0; t < b.neg.size(1); ++t) {
        const int64_t n = b.neg[r][t].item<int64_t>();
        if (b.pos[r][t].item<int64_t>() == 0) continue;
        EXPECT_EQ(hist.count(n), 0u) << "negative " << n << " is in user " << local << "'s history";
      }
    }
  }
}

TEST(Sampler, SharedNegativesForSampledSoftmax) {
  SplitData d(random_shard(100, 50, 8));
  SamplerOptions o;
  o.per_position_negatives = false;
  o.shared_negatives = 16;
  Sampler s(d, o);
  s.start_epoch(1);
  Batch b = s.next();
  EXPECT_FALSE(b.neg.defined());
  ASSERT_EQ(b.shared.size(0), 16);
  EXPECT_GE(b.shared.min().item<int64_t>(), 1);
  EXPECT_LE(b.shared.max().item<int64_t>(), 50);
}

TEST(Sampler, GbceDrawsKNegativesPerTarget) {
  // gbce: neg [B,T,k], 0 exactly where pos is 0, never in the user's
  // history, the same for 1 and 3 sampler threads; no shared negatives.
  SplitData d(random_shard(300, 120, 12));
  const int64_t k = 5;
  SamplerOptions o;
  o.batch_size = 40;
  o.per_position_negatives = false;
  o.negatives_per_target = k;
  o.seed = 17;
  const auto one = epoch_batches(d, o, 2, 1), three = epoch_batches(d, o, 2, 3);
  ASSERT_EQ(one.size(), three.size());
  ASSERT_GT(one.size(), 5u);
  std::set<int64_t> seen;
  for (size_t i = 0; i < one.size(); ++i) {
    const Batch& b = one[i];
    EXPECT_TRUE(torch::equal(b.neg, three[i].neg)) << "batch " << i;
    EXPECT_TRUE(torch::equal(b.pos, three[i].pos)) << "batch " << i;
    EXPECT_FALSE(b.shared.defined());
    ASSERT_EQ(b.neg.dim(), 3);
    ASSERT_EQ(b.neg.size(0), b.pos.size(0));
    ASSERT_EQ(b.neg.size(1), b.pos.size(1));
    ASSERT_EQ(b.neg.size(2), k);
    auto neg = b.neg.accessor<int64_t, 3>();
    auto pos = b.pos.accessor<int64_t, 2>();
    for (int64_t r = 0; r < b.pos.size(0); ++r) {
      const int64_t local = b.users[r].item<int64_t>() - 100;
      ItemSpan train = d.train(local);
      const std::set<int64_t> hist(train.begin(), train.end());
      for (int64_t t = 0; t < b.pos.size(1); ++t)
        for (int64_t j = 0; j < k; ++j) {
          if (pos[r][t] == 0) {
            EXPECT_EQ(neg[r][t][j], 0) << "batch " << i << " row " << r << " position " << t;
            continue;
          }
          EXPECT_GE(neg[r][t][j], 1);
          EXPECT_LE(neg[r][t][j], 120);
          EXPECT_EQ(hist.count(neg[r][t][j]), 0u)
              << "negative " << neg[r][t][j] << " in user " << local << "'s history";
          seen.insert(neg[r][t][j]);
        }
    }
  }
  EXPECT_GT(seen.size(), 60u);  // spread over the catalog, not one shared draw
  EXPECT_FALSE(torch::equal(one[0].neg.select(2, 0), one[0].neg.select(2, 1)));
  // bce's [B,T] and gbce's [B,T,k] are one or the other.
  o.per_position_negatives = true;
  EXPECT_THROW(Sampler s(d, o), sasrec::Error);
}

TEST(Sampler, LengthBucketsKeepEveryUserOnceAndCutPadding) {
  SplitData d(random_shard(2000, 300, 9));
  auto padding = [&](int64_t buckets, std::multiset<int64_t>* users) {
    SamplerOptions o;
    o.batch_size = 50;
    o.length_buckets = buckets;
    Sampler s(d, o);
    s.start_epoch(1);
    int64_t cells = 0, targets = 0;
    for (int64_t i = 0; i < s.steps_per_epoch(); ++i) {
      Batch b = s.next();
      cells += b.seq.numel();
      targets += b.targets;
      for (int64_t r = 0; r < b.users.size(0); ++r) users->insert(b.users[r].item<int64_t>());
    }
    return static_cast<double>(cells - targets) / cells;
  };
  std::multiset<int64_t> plain, bucketed, want;
  const double pad_plain = padding(0, &plain), pad_bucketed = padding(8, &bucketed);
  for (int64_t u : d.trainable_users()) want.insert(d.global_user(u));
  EXPECT_EQ(plain, want);
  EXPECT_EQ(bucketed, want);
  EXPECT_LT(pad_bucketed, pad_plain / 3) << pad_plain << " vs " << pad_bucketed;
}

TEST(Sampler, StartingInsideAnEpochGivesTheRemainingBatches) {
  // A run resumed at batch k of an epoch must see exactly batches k.. of
  // the uninterrupted epoch, whatever the thread count.
  SplitData d(random_shard(500, 200, 7));
  SamplerOptions o;
  o.batch_size = 32;
  o.seed = 13;
  o.prefetch = 2;
  o.threads = 3;
  Sampler whole(d, o);
  whole.start_epoch(2);
  std::vector<Batch> all;
  for (int64_t i = 0; i < whole.steps_per_epoch(); ++i) all.push_back(whole.next());
  ASSERT_GT(all.size(), 5u);
  for (int threads : {1, 3, 4}) {
    for (int64_t first : {int64_t{1}, int64_t{4}, static_cast<int64_t>(all.size()) - 1}) {
      o.threads = threads;
      Sampler part(d, o);
      part.start_epoch(2, first);
      for (int64_t i = first; i < part.steps_per_epoch(); ++i) {
        Batch b = part.next();
        EXPECT_EQ(b.index, i) << threads << " threads from " << first;
        EXPECT_TRUE(torch::equal(b.users, all[i].users)) << threads << " threads, batch " << i;
        EXPECT_TRUE(torch::equal(b.neg, all[i].neg)) << threads << " threads, batch " << i;
      }
    }
  }
}

// ---- the popularity proposal ------------------------------------------------------

namespace {
// Pearson's chi-square of `draws` draws from `table` against weights / sum.
double chi_square(const AliasTable& table, const std::vector<int64_t>& weights, int64_t draws, uint64_t seed,
                  int64_t* dof) {
  std::vector<int64_t> seen(weights.size(), 0);
  Rng rng(seed);
  for (int64_t i = 0; i < draws; ++i) ++seen.at(table.draw(rng));
  double total = 0;
  for (int64_t w : weights) total += w;
  double chi2 = 0;
  *dof = -1;
  for (size_t i = 0; i < weights.size(); ++i) {
    if (weights[i] == 0) {
      EXPECT_EQ(seen[i], 0) << "item " << i << " has weight 0 but was drawn";
      continue;
    }
    const double expected = draws * weights[i] / total;
    chi2 += (seen[i] - expected) * (seen[i] - expected) / expected;
    ++*dof;
  }
  return chi2;
}
}  // namespace

TEST(AliasTable, FrequenciesMatchTheWeights) {
  // Small: 3 degrees of freedom, 0.1% critical value 16.27.
  const std::vector<int64_t> small{0, 5, 1, 0, 10, 4};
  int64_t dof = 0;
  EXPECT_LT(chi_square(AliasTable(small), small, 200000, 1, &dof), 16.27);
  EXPECT_EQ(dof, 3);
  // Zipf-like over 2000 items with zeros: below dof + 5 sqrt(2 dof) (about 1e-6 by chance).
  std::vector<int64_t> zipf(2001, 0);
  for (int64_t i = 1; i <= 2000; ++i) zipf[i] = i % 7 == 0 ? 0 : 100000 / i;
  const double chi2 = chi_square(AliasTable(zipf), zipf, 2000000, 2, &dof);
  EXPECT_LT(chi2, dof + 5 * std::sqrt(2.0 * dof)) << dof << " degrees of freedom";
  // A single item with all the weight.
  Rng rng(3);
  AliasTable one({0, 0, 7});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(one.draw(rng), 2);
}

TEST(Sampler, TrainItemCountsCountTheTrainParts) {
  // Users: {5} train-only; {5,6} train-only; {5,6,7}: train {5}; {1,2,3,4,8}: train {1,2,3}.
  SplitData d(shard_of({{5}, {5, 6}, {5, 6, 7}, {1, 2, 3, 4, 8}}, 10));
  const std::vector<int64_t> want{0, 1, 1, 1, 0, 3, 1, 0, 0, 0, 0};
  EXPECT_EQ(d.train_item_counts(), want);
}

TEST(Sampler, PopularityNegativesAreDeterministicAndCarryLogQ) {
  SplitData d(random_shard(400, 120, 11));
  std::vector<int64_t> counts = d.train_item_counts();
  counts[7] = 0;  // an item never drawn
  double total = 0;
  for (int64_t c : counts) total += c;
  SamplerOptions o;
  o.batch_size = 32;
  o.per_position_negatives = false;
  o.shared_negatives = 64;
  o.proposal_counts = counts;
  o.seed = 21;
  const auto one = epoch_batches(d, o, 3, 1), three = epoch_batches(d, o, 3, 3);
  ASSERT_EQ(one.size(), three.size());
  ASSERT_GT(one.size(), 5u);
  for (size_t b = 0; b < one.size(); ++b) {
    EXPECT_TRUE(torch::equal(one[b].shared, three[b].shared)) << "batch " << b;
    EXPECT_TRUE(torch::equal(one[b].shared_log_q, three[b].shared_log_q)) << "batch " << b;
    ASSERT_EQ(one[b].shared.size(0), 64);
    for (int64_t k = 0; k < 64; ++k) {
      const int64_t item = one[b].shared[k].item<int64_t>();
      ASSERT_GT(counts.at(item), 0) << "item " << item << " drawn with count 0";
      EXPECT_NEAR(one[b].shared_log_q[k].item<float>(), std::log(64.0 * counts[item] / total), 1e-5);
    }
  }
  EXPECT_FALSE(torch::equal(one[0].shared, one[1].shared));
  // Uniform (no counts) stays as it was: no log-Q.
  o.proposal_counts.clear();
  o.threads = 1;
  Sampler u(d, o);
  u.start_epoch(3);
  EXPECT_FALSE(u.next().shared_log_q.defined());
}
