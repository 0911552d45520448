// dataset.cpp: the leave-one-out and time splits of a shard (see dataset.h).
#include "sasrec/dataset.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "sasrec/error.h"

namespace sasrec {

const char* holdout_name(Holdout h) { return h == Holdout::Valid ? "valid" : "test"; }

Holdout parse_holdout(const std::string& name) {
  if (name == "valid") return Holdout::Valid;
  if (name == "test") return Holdout::Test;
  SASREC_FAIL(Check, "split must be valid or test, got ", name);
}

SplitData::SplitData(Shard shard, const SplitOptions& options) : shard_(std::move(shard)), options_(options) {
  const bool time = options_.kind == SplitKind::Time;
  if (time) {
    SASREC_CHECK(static_cast<int64_t>(shard_.timestamps.size()) == num_interactions(),
                 "the time split needs the shard's timestamps (load_shard with timestamps)");
    SASREC_CHECK(options_.valid_from <= options_.test_from, "valid_from ", options_.valid_from, " after test_from ",
                 options_.test_from);
  }
  train_end_.resize(num_users());
  for (int64_t u = 0; u < num_users(); ++u) {
    const int64_t n = shard_.length(u);
    // The periods as positions in the user's sequence: [0, v) train, [v, t) valid, [t, n) test.
    int64_t v = n, t = n;
    if (time) {
      const int64_t* ts = shard_.timestamps.data() + shard_.offsets[u];
      if (!std::is_sorted(ts, ts + n))
        SASREC_FAIL(Input, "user ", global_user(u),
                    ": its interactions are not in time order in the store; "
                    "regenerate the file with csv2h5, which sorts each user's interactions by time");
      v = std::lower_bound(ts, ts + n, options_.valid_from) - ts;
      t = std::lower_bound(ts, ts + n, options_.test_from) - ts;
    } else if (n >= 3) {
      v = n - 2, t = n - 1;
    }
    train_end_[u] = options_.refit ? t : v;
    if (train_end_[u] >= 2) trainable_.push_back(u);
    // Cases: every position of the period with some history, or the first of them.
    auto add = [&](std::vector<EvalCase>& out, int64_t begin, int64_t end) {
      for (int64_t i = std::max<int64_t>(begin, 1); i < end; ++i) {
        out.push_back({u, i});
        if (options_.targets == EvalTargets::First) break;  // (leave_one_out: one position anyway)
      }
    };
    const size_t before = valid_.size() + test_.size();
    if (!options_.refit) add(valid_, v, t);
    add(test_, t, n);
    if (valid_.size() + test_.size() > before) holdout_.push_back(u);
  }
}

std::vector<int64_t> SplitData::train_item_counts() const {
  std::vector<int64_t> counts(num_items() + 1, 0);
  for (int64_t u = 0; u < num_users(); ++u)
    for (int32_t item : train(u)) ++counts[item];
  return counts;
}

SortedTimes::SortedTimes(const Shard& shard) : times_(shard.timestamps) { std::sort(times_.begin(), times_.end()); }

int64_t SortedTimes::count_at_most(int64_t t) const {
  return std::upper_bound(times_.begin(), times_.end(), t) - times_.begin();
}

int64_t resolve_cutoff(const TimeCutoff& cutoff, const std::function<int64_t(int64_t)>& count_at_most) {
  SASREC_CHECK(cutoff.set(), "resolve_cutoff of an unset cutoff");
  if (cutoff.kind == TimeCutoff::Kind::Timestamp) return cutoff.timestamp;
  const int64_t n = count_at_most(std::numeric_limits<int64_t>::max());
  if (n == 0)
    SASREC_FAIL(Input, "the quantile ", cutoff.text, " of the interaction times: the store has no interactions");
  const int64_t k = std::min(n - 1, static_cast<int64_t>(std::floor(cutoff.quantile * static_cast<double>(n))));
  // The smallest t with count_at_most(t) > k, over the whole int64 range.
  int64_t lo = std::numeric_limits<int64_t>::min(), hi = std::numeric_limits<int64_t>::max();
  while (lo < hi) {
    const int64_t mid = static_cast<int64_t>((static_cast<__int128>(lo) + hi) >> 1);  // floor, no overflow
    if (count_at_most(mid) > k)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

}  // namespace sasrec
