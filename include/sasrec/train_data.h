// train_data.h: what a training run's ranks read before the model exists:
// each rank's split of its shard (data.split; the time split's cutoffs
// resolved over every rank's interactions), the checks of the data against
// the config, and the memory plan every rank makes alike. Collectives only,
// the same on every rank.
#pragma once

#include <memory>
#include <utility>

#include "sasrec/comm.h"
#include "sasrec/config.h"
#include "sasrec/dataset.h"
#include "sasrec/memory_plan.h"

namespace sasrec {

// This rank's shard split as data.split says; a time split that leaves a period empty is refused.
std::unique_ptr<SplitData> load_split(const DataConfig& config, Communicator& comm);

// Refuses a catalog with nothing to rank, and a sampled protocol asking for
// more negatives than some evaluated user has untouched items.
void check_data_for_config(const Config& config, const SplitData& data, Communicator& comm);

// The plan of the largest shard and the smallest budget over ranks (on CPU
// the machine's memory split among its ranks).
std::pair<MemoryPlan, MemoryBudget> plan_rank_memory(const Config& config, const SplitData& data, Communicator& comm,
                                                     torch::Device device, MemoryUse use);

}  // namespace sasrec
