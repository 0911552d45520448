// memory_plan.h: the per-rank memory estimate a training run makes before it
// allocates anything big, and the refusal of a config that cannot fit.
//
// plan_memory() turns the config and the data's sizes into named components
// (parameters, gradients, optimizer state, exchange buffers, activations,
// loss buffers, data, evaluation buffers, fixed overhead), each in bytes
// with the config keys that drive it and what would shrink it. All fp32.
// The figures are an estimate: upper bounds for the per-step buffers (every
// sequence of a batch taken as maxlen long), calibrated against measured
// peak RSS (docs/large_catalogs.md, "Memory plan"). The budget is
// runtime.memory_mb, else what the machine has (available_memory);
// check_memory_plan() throws sasrec::Error(Config) over it. This file reads
// /proc and /sys and asks CUDA for free memory; it allocates no tensors and
// never calls MPI (the trainer hands it the sizes).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sasrec/config.h"

namespace sasrec {

// A byte count that saturates at INT64_MAX instead of wrapping: a config
// asking for more than 8 EiB gets an estimate of "too much", never a
// negative number that passes the budget check. The inputs are >= 0.
class Sat {
 public:
  constexpr Sat(int64_t v = 0) : v_(v) {}  // NOLINT: plain numbers mix in
  constexpr int64_t value() const { return v_; }
  friend Sat operator+(Sat a, Sat b) {
    int64_t r;
    return __builtin_add_overflow(a.v_, b.v_, &r) ? Sat(kMax) : Sat(r);
  }
  friend Sat operator*(Sat a, Sat b) {
    int64_t r;
    return __builtin_mul_overflow(a.v_, b.v_, &r) ? Sat(kMax) : Sat(r);
  }
  friend Sat min(Sat a, Sat b) { return a.v_ < b.v_ ? a : b; }
  friend Sat max(Sat a, Sat b) { return a.v_ < b.v_ ? b : a; }

 private:
  static constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  int64_t v_;
};

struct MemoryComponent {
  std::string name;  // "item table", "loss buffers (ce)", ...
  int64_t bytes = 0;
  std::string keys;    // the config keys that drive it: "model.hidden, items"
  std::string advice;  // what to change to shrink it (or why nothing does)
};

struct MemoryPlan {
  std::vector<MemoryComponent> components;
  // A way to fit that no one component's advice gives (a replicated item
  // table: the rank count at which train.item_table sharded fits); "" if none.
  std::string advice;
  int64_t total() const;
  // The component named `name`, or nullptr.
  const MemoryComponent* find(const std::string& name) const;
};

// Per-rank estimate for training `config` on a store with `num_items` items
// and `num_users_total` users, this rank holding `local_interactions`
// interactions (the trainer passes the largest shard's, so every rank
// computes the same plan), with `world_size` ranks on `device`.
// What the plan is for: a training run, or only evaluating (or serving) a
// checkpoint: then the parameters, the data, the evaluation buffers and the
// fixed overhead, no optimizer, gradients, activations or exchange buffers.
enum class MemoryUse { Training, Evaluation };
MemoryPlan plan_memory(const Config& config, int64_t num_items, int64_t num_users_total, int64_t local_interactions,
                       int world_size, torch::Device device, MemoryUse use = MemoryUse::Training);

// Bytes this process may still use on `device`, -1 when unknown. CPU: the
// smaller of /proc/meminfo MemAvailable and the cgroup's memory limit (v2
// memory.max, v1 memory.limit_in_bytes) where one is set. CUDA: the device's
// free memory when this build has CUDA, else -1.
int64_t available_memory(torch::Device device);
// The CPU rule over given files (tests): MemAvailable of `meminfo_path`,
// capped by the first readable, numeric limit among `cgroup_limit_paths`.
int64_t available_cpu_memory(const std::string& meminfo_path, const std::vector<std::string>& cgroup_limit_paths);

struct MemoryBudget {
  int64_t bytes = -1;  // -1: unknown, nothing is checked
  std::string source;  // "runtime.memory_mb" | "available memory (MemAvailable / cgroup limit)" | ...
};
// runtime.memory_mb when > 0, else available_memory(device).
MemoryBudget memory_budget(const Config& config, torch::Device device);

// Throws sasrec::Error(Config) when plan.total() exceeds the budget (a
// budget of -1 bytes checks nothing): the estimate, the budget and its
// source, the largest components with the keys that drive them and what to
// change.
void check_memory_plan(const MemoryPlan& plan, const MemoryBudget& budget);
// For a replicated item table and a sampled loss: the smallest power-of-two
// rank count at which train.item_table sharded fits `budget_bytes` a rank,
// said as MemoryPlan::advice; "" when sharding does not apply or never fits.
std::string sharding_advice(const Config& config, int64_t num_items, int64_t num_users_total,
                            int64_t local_interactions, torch::Device device, MemoryUse use, int64_t budget_bytes);

// One line per component, then the total and the budget (rank 0 logs them).
std::vector<std::string> format_memory_plan(const MemoryPlan& plan, const MemoryBudget& budget);
// The metrics file's `memory_plan` event.
nlohmann::json memory_plan_event(const MemoryPlan& plan, const MemoryBudget& budget);

// "1.23 GiB" / "456.7 MiB" / "12.0 KiB" (powers of 1024, as runtime.memory_mb).
std::string format_bytes(int64_t bytes);

namespace detail {
// Free memory of CUDA device `index`, -1 without CUDA: src/memory_cuda.cpp
// or src/memory_cuda_unavailable.cpp, chosen by CMake (no #ifdef).
int64_t cuda_free_memory(int index);
}  // namespace detail

}  // namespace sasrec
