// dataset.cpp: leave-one-out split views over a shard.
#include "sasrec/dataset.h"

namespace sasrec {

SplitData::SplitData(Shard shard) : shard_(std::move(shard)) {
  for (int64_t u = 0; u < shard_.size(); ++u) {
    if (train(u).size >= 2) trainable_.push_back(u);
    if (has_holdout(u)) holdout_.push_back(u);
  }
}

ItemSpan SplitData::train(int64_t u) const {
  ItemSpan s = full(u);
  if (has_holdout(u)) s.size -= 2;
  return s;
}

std::vector<int64_t> SplitData::train_item_counts() const {
  std::vector<int64_t> counts(num_items() + 1, 0);
  for (int64_t u = 0; u < num_users(); ++u)
    for (int32_t item : train(u)) ++counts[item];
  return counts;
}

}  // namespace sasrec
