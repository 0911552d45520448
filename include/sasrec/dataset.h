// dataset.h: the leave-one-out split of one rank's shard.
//
// Per user: last item = test, second to last = valid, the rest = train;
// users with fewer than 3 interactions are train-only (no valid/test).
// A user is trainable when the train part has at least 2 items (one
// input -> target pair). Views only: no copy of the shard's items.
#pragma once

#include <cstdint>
#include <vector>

#include "sasrec/store.h"

namespace sasrec {

struct ItemSpan {
  const int32_t* data = nullptr;
  int64_t size = 0;
  const int32_t* begin() const { return data; }
  const int32_t* end() const { return data + size; }
};

class SplitData {
 public:
  explicit SplitData(Shard shard);

  int64_t num_users() const { return shard_.size(); }             // in this shard
  int64_t num_users_total() const { return shard_.num_users_total; }
  int64_t num_items() const { return shard_.num_items; }
  int64_t global_user(int64_t local) const { return shard_.users.begin + local; }
  int64_t num_interactions() const { return static_cast<int64_t>(shard_.items.size()); }

  ItemSpan full(int64_t u) const { return {shard_.sequence(u), shard_.length(u)}; }
  ItemSpan train(int64_t u) const;
  bool has_holdout(int64_t u) const { return shard_.length(u) >= 3; }
  int32_t valid_item(int64_t u) const { return has_holdout(u) ? full(u).data[full(u).size - 2] : 0; }
  int32_t test_item(int64_t u) const { return has_holdout(u) ? full(u).data[full(u).size - 1] : 0; }

  // Local indices of users with >= 2 train items, ascending.
  const std::vector<int64_t>& trainable_users() const { return trainable_; }
  // Local indices of users with a valid and a test item, ascending.
  const std::vector<int64_t>& holdout_users() const { return holdout_; }
  // [I+1]: how often each item occurs in this shard's train parts (the
  // popularity proposal sums it over ranks).
  std::vector<int64_t> train_item_counts() const;

 private:
  Shard shard_;
  std::vector<int64_t> trainable_;
  std::vector<int64_t> holdout_;
};

}  // namespace sasrec
