// dataset.h: the split of one rank's shard into training sequences and the
// evaluation cases of valid and test.
//
// leave_one_out (the paper, the port, ICLRec): per user, the last item is
//   test, the second to last valid, the rest train; users with fewer than 3
//   interactions are train-only.
// time (global temporal split: RecBole's order TO, eSASRec's global holdout):
//   one pair of cutoffs for every user. Interactions before valid_from train;
//   those in [valid_from, test_from) are valid cases, those at or after
//   test_from test cases. Each case is predicted from the user's whole
//   history up to it (earlier held-out interactions included); a case needs
//   at least one earlier interaction. targets: all (every held-out
//   interaction) or first (each user's first case in the period).
// refit: valid is trained on (train = everything before test_from, or all
//   but the last item), and there are no valid cases.
//
// A case (user, target) means: input = full(user)[0..target) (its last
// maxlen items), target item = full(user)[target], the input history
// excluded from the full ranking. This file decides WHICH cases exist; the
// evaluator scores them. A user is trainable when its train part has at
// least 2 items (one input -> target pair). Views only: no copy of the
// shard's items.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sasrec/config.h"
#include "sasrec/store.h"

namespace sasrec {

struct ItemSpan {
  const int32_t* data = nullptr;
  int64_t size = 0;
  const int32_t* begin() const { return data; }
  const int32_t* end() const { return data + size; }
};

enum class Holdout { Valid, Test };
const char* holdout_name(Holdout h);  // "valid" | "test"
// "valid" | "test" -> Holdout; throws Error(Check) otherwise.
Holdout parse_holdout(const std::string& name);

// The split of a shard, cutoffs resolved to timestamps (resolve_cutoff).
struct SplitOptions {
  SplitKind kind = SplitKind::LeaveOneOut;
  int64_t valid_from = 0;  // time: first timestamp of the valid period
  int64_t test_from = 0;   // time: first timestamp of the test period (>= valid_from)
  EvalTargets targets = EvalTargets::All;
  bool refit = false;
};

struct EvalCase {
  int64_t user = 0;    // local index
  int64_t target = 0;  // position in full(user), >= 1; the history is full(user)[0..target)
};

class SplitData {
 public:
  // The time split needs shard.timestamps, each user's in time order.
  explicit SplitData(Shard shard, const SplitOptions& options = {});

  int64_t num_users() const { return shard_.size(); }  // in this shard
  int64_t num_users_total() const { return shard_.num_users_total; }
  int64_t num_items() const { return shard_.num_items; }
  int64_t global_user(int64_t local) const { return shard_.users.begin + local; }
  int64_t num_interactions() const { return static_cast<int64_t>(shard_.items.size()); }
  const SplitOptions& options() const { return options_; }

  ItemSpan full(int64_t u) const { return {shard_.sequence(u), shard_.length(u)}; }
  // The training prefix of user u's sequence.
  ItemSpan train(int64_t u) const { return {shard_.sequence(u), train_end_[u]}; }

  // Local indices of users with >= 2 train items, ascending.
  const std::vector<int64_t>& trainable_users() const { return trainable_; }
  // The cases of valid or test, by user (ascending), then target position.
  const std::vector<EvalCase>& cases(Holdout h) const { return h == Holdout::Valid ? valid_ : test_; }
  // Local indices of users with a case in valid or test, ascending.
  const std::vector<int64_t>& holdout_users() const { return holdout_; }
  // [I+1]: how often each item occurs in this shard's train parts (the
  // popularity proposal sums it over ranks).
  std::vector<int64_t> train_item_counts() const;

 private:
  Shard shard_;
  SplitOptions options_;
  std::vector<int64_t> train_end_;  // [users] length of each train prefix
  std::vector<int64_t> trainable_;
  std::vector<EvalCase> valid_, test_;
  std::vector<int64_t> holdout_;
};

// The interaction times of a shard, sorted, for counting against a cutoff.
class SortedTimes {
 public:
  explicit SortedTimes(const Shard& shard);
  int64_t count_at_most(int64_t t) const;  // interactions of the shard with time <= t

 private:
  std::vector<int64_t> times_;
};

// The timestamp a cutoff stands for. A quantile q is the k-th smallest
// interaction time of the whole store, k = floor(q N) (0-based, N all
// interactions), found by bisection over int64 on `count_at_most(t)`: the
// number of interactions of ALL ranks with time <= t (one sum over ranks a
// call, 64 calls; every rank makes the same calls). Interactions at or after
// the cutoff are held out, so with ties at it slightly more than 1 - q are.
int64_t resolve_cutoff(const TimeCutoff& cutoff, const std::function<int64_t(int64_t)>& count_at_most);

}  // namespace sasrec
