// train_data.cpp: a run's split, its checks and its memory plan (see train_data.h).
#include "sasrec/train_data.h"

#include <algorithm>

#include "sasrec/error.h"
#include "sasrec/log.h"

namespace sasrec {

// Refuses a catalog with nothing to rank, and a sampled protocol asking for
// more negatives than some evaluated user has untouched items (it would rank
// against fewer, and different, items than configured).
void check_data_for_config(const Config& config, const SplitData& data, Communicator& comm) {
  const int64_t items = data.num_items();
  if (items < 2)
    SASREC_FAIL(Input, config.data.path, ": the catalog has ", items,
                " item(s): there is nothing to rank, and no loss has a negative to learn from (gbce and bce draw "
                "items the user did not touch). Use a store with 2 or more items");
  const auto& p = config.eval.protocols;
  if (std::find(p.begin(), p.end(), Protocol::Sampled) == p.end()) return;
  const int64_t k = config.eval.sampled_negatives;
  int64_t short_users = 0, fewest = items;
  std::vector<int32_t> seen;
  for (int64_t u : data.holdout_users()) {
    const ItemSpan full = data.full(u);
    seen.assign(full.begin(), full.end());
    std::sort(seen.begin(), seen.end());
    const int64_t untouched = items - (std::unique(seen.begin(), seen.end()) - seen.begin());
    short_users += untouched <= k;
    fewest = std::min(fewest, untouched);
  }
  short_users = comm.allreduce_sum(short_users);
  if (short_users == 0) return;
  fewest = comm.allgather(torch::tensor({fewest}, torch::kInt64)).min().item<int64_t>();
  SASREC_FAIL(Config, config.where("eval.sampled_negatives"), "config key 'eval.sampled_negatives' (", k,
              ") is at or above the number of items that ", short_users,
              " user(s) with a held-out item never touched (the fewest: ", fewest, " of ", items,
              " items); the sampled protocol draws its negatives from those items, so it could not rank against ", k,
              " of them. ",
              fewest > 1 ? detail::cat("Set eval.sampled_negatives below ", fewest, ", or use eval.protocols: [full]")
                         : std::string("Use eval.protocols: [full]"));
}

// The memory plan every rank makes alike (memory_plan.h): the largest
// shard's interactions; a budget of runtime.memory_mb, else what the device
// has, on CPU split among the ranks of a machine (local ranks 0..L-1, the
// same L on every machine assumed); the smallest over ranks counts.
std::pair<MemoryPlan, MemoryBudget> plan_rank_memory(const Config& config, const SplitData& data, Communicator& comm,
                                                     torch::Device device, MemoryUse use) {
  MemoryBudget budget = memory_budget(config, device);
  const bool shared = config.runtime.memory_mb == 0 && device.is_cpu();
  auto mine = torch::tensor({data.num_interactions(), int64_t{comm.local_rank()}, budget.bytes}, torch::kInt64);
  auto all = comm.allgather(mine.view({1, 3})).view({-1, 3});  // [world,3]
  const int64_t largest_shard = all.select(1, 0).max().item<int64_t>();
  const int64_t per_machine = all.select(1, 1).max().item<int64_t>() + 1;
  budget.bytes = all.select(1, 2).min().item<int64_t>();
  if (budget.bytes > 0 && shared && per_machine > 1) {
    budget.bytes /= per_machine;
    budget.source += detail::cat(" / ", per_machine, " ranks on the machine");
  }
  MemoryPlan plan =
      plan_memory(config, data.num_items(), data.num_users_total(), largest_shard, comm.world_size(), device, use);
  if (budget.bytes > 0 && plan.total() > budget.bytes)
    plan.advice =
        sharding_advice(config, data.num_items(), data.num_users_total(), largest_shard, device, use, budget.bytes);
  return {plan, budget};
}

// This rank's shard split as data.split says; the time split's quantile
// cutoffs are resolved over every rank's interaction times (the same
// collectives on every rank), and a split that leaves a period empty is refused.
std::unique_ptr<SplitData> load_split(const DataConfig& config, Communicator& comm) {
  const bool time = config.split == SplitKind::Time;
  Shard shard = load_shard(config.path, comm.rank(), comm.world_size(), /*with_timestamps=*/time);
  SplitOptions options;
  options.kind = config.split;
  options.targets = config.eval_targets;
  options.refit = config.refit;
  if (time) {
    const SortedTimes times(shard);
    auto count_at_most = [&](int64_t t) { return comm.allreduce_sum(times.count_at_most(t)); };
    options.test_from = resolve_cutoff(config.test_from, count_at_most);
    options.valid_from = config.valid_from.set() ? resolve_cutoff(config.valid_from, count_at_most) : options.test_from;
    if (options.valid_from > options.test_from)
      SASREC_FAIL(Config, "data.valid_from (", config.valid_from.text, " = ", options.valid_from,
                  ") comes after data.test_from (", config.test_from.text, " = ", options.test_from,
                  "); move valid_from earlier");
  }
  auto data = std::make_unique<SplitData>(std::move(shard), options);
  if (!time) return data;
  auto train = torch::zeros({3}, torch::kInt64);  // train interactions, valid cases, test cases: over all ranks
  for (int64_t u = 0; u < data->num_users(); ++u) train[0] += data->train(u).size;
  train[1] = static_cast<int64_t>(data->cases(Holdout::Valid).size());
  train[2] = static_cast<int64_t>(data->cases(Holdout::Test).size());
  comm.allreduce_sum(train);
  const int64_t valid_cases = train[1].item<int64_t>(), test_cases = train[2].item<int64_t>();
  log_line(
      comm.is_root(),
      detail::cat("time split: train before ", options.refit ? options.test_from : options.valid_from,
                  options.refit ? " (data.refit)" : "", ", valid from ", options.valid_from, " (data.valid_from ",
                  config.valid_from.text, "), test from ", options.test_from, " (data.test_from ",
                  config.test_from.text, "): ", train[0].item<int64_t>(), " train interactions, ", valid_cases,
                  " valid and ", test_cases, " test cases (", eval_targets_name(config.eval_targets), " targets)"));
  if (test_cases == 0)
    SASREC_FAIL(Config, config.path, ": no interaction at or after data.test_from (", config.test_from.text, " = ",
                options.test_from,
                ") follows an earlier one of its user: nothing to test; move data.test_from earlier");
  if (valid_cases == 0 && !options.refit)
    SASREC_FAIL(Config, config.path, ": no interaction between data.valid_from (", config.valid_from.text, " = ",
                options.valid_from, ") and data.test_from (", options.test_from,
                ") follows an earlier one of its user: nothing to validate on; move data.valid_from earlier "
                "(or set data.refit: true)");
  return data;
}

}  // namespace sasrec
