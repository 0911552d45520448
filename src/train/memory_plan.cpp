// memory_plan.cpp: the per-rank memory estimate and its check (see memory_plan.h).
#include "sasrec/memory_plan.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

#include "sasrec/device.h"
#include "sasrec/error.h"
#include "sasrec/evaluator.h"
#include "sasrec/model.h"
#include "sasrec/objective.h"

namespace sasrec {
namespace {

constexpr int64_t kFloat = 4;
constexpr int64_t kMiB = int64_t{1} << 20;
// libtorch, OpenBLAS, OpenMP, MPI and the process itself, measured: peak RSS
// 161 MiB for `sasrec_ddp --version`, 182 MiB for one step and an evaluation
// on a 100-user, 50-item store (docs/large_catalogs.md, "Memory plan").
constexpr int64_t kFixedOverhead = 180 * kMiB;
// The CPU evaluator's score block (evaluator.h).
constexpr int64_t kEvalBlock = kScoreBlockRows * kScoreBlockCols * kFloat;

// Parameters other than the item table, in floats: the model's declared
// shapes (model.h, parameter_shapes), summed without building anything.
Sat dense_parameter_floats(const ModelConfig& m, int64_t num_users) {
  Sat floats = 0;
  for (const auto& p : parameter_shapes(SASRecOptions::from(m, /*num_items=*/1, num_users))) {
    if (p.name == "item.weight") continue;
    Sat n = 1;
    for (int64_t dim : p.shape) n = n * dim;
    floats = floats + n;
  }
  return floats;
}

int64_t read_meminfo_available(const std::string& path) {
  std::ifstream in(path);
  std::string key;
  int64_t value = 0;
  std::string unit;
  while (in >> key >> value) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return value * 1024;  // kB
  }
  return -1;
}

// A cgroup limit file holds a byte count, or "max" (v2) / a huge number (v1) when unlimited.
int64_t read_cgroup_limit(const std::string& path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text) || text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return -1;
  try {
    const long long v = std::stoll(text);
    return v >= (int64_t{1} << 60) ? -1 : static_cast<int64_t>(v);
  } catch (const std::exception&) {
    return -1;  // out of range: unlimited
  }
}

}  // namespace

int64_t MemoryPlan::total() const {
  Sat sum = 0;
  for (const auto& c : components) sum = sum + c.bytes;
  return sum.value();
}

const MemoryComponent* MemoryPlan::find(const std::string& name) const {
  for (const auto& c : components)
    if (c.name == name) return &c;
  return nullptr;
}

namespace {

// plan_memory's sizes and its components, one method a group of them.
struct Planner {
  const Config& config;
  const ModelConfig& m = config.model;
  const TrainConfig& t = config.train;
  const EvalConfig& e = config.eval;
  int64_t num_users_total, local_interactions;
  int world_size;
  torch::Device device;
  MemoryUse use;
  Sat d = m.hidden, n = m.maxlen, B = t.batch_size;
  Sat I, rows, N;  // items; table rows (a padding row); tokens of a step, upper bound (all maxlen long)
  std::unique_ptr<Objective> objective;  // the loss's share: rows a step touches, negatives per cell, buffers
  LossMemory loss;
  bool ce = false, dropout = m.dropout > 0;
  bool sharded;        // train.item_table sharded: one block of ceil((I+1)/R) rows a rank
  Sat table, rest, U;  // this rank's item table (or block) and other parameters in bytes, touched rows
  MemoryPlan plan;

  Planner(const Config& c, int64_t items, int64_t users, int64_t interactions, int world, torch::Device dev,
          MemoryUse u)
      : config(c),
        num_users_total(users),
        local_interactions(interactions),
        world_size(world),
        device(dev),
        use(u),
        I(items),
        rows(items + 1),
        N(B * n),
        objective(Objective::make(c.train, items)),
        loss(objective->memory(N, d, I)),
        ce(!objective->gathers_item_rows()),
        sharded(c.train.item_table == ItemTable::Sharded),
        table((sharded ? Sat((items + world) / world) : rows) * d * kFloat),
        rest(dense_parameter_floats(m, users) * kFloat),
        U(loss.touched_rows) {}

  void add(std::string name, Sat bytes, std::string keys, std::string advice) {
    static const char* const kEvaluation[] = {"item table", "other parameters", "data", "evaluation buffers",
                                              "fixed overhead"};
    if (use == MemoryUse::Evaluation &&
        std::none_of(std::begin(kEvaluation), std::end(kEvaluation), [&](const char* c) { return name == c; }))
      return;  // training state: an evaluation holds none of it
    plan.components.push_back({std::move(name), bytes.value(), std::move(keys), std::move(advice)});
  }

  void parameters() {
    if (sharded)
      add("item table (this rank's block)", table, "model.hidden, items, world size",
          "each rank holds ceil((I+1)/R) x d x 4 bytes of the table: more ranks shrink it, or lower model.hidden");
    else
      add("item table", table, "model.hidden, items, train.item_table",
          "the table (I+1) x d x 4 bytes is replicated on every rank, so more ranks do not shrink it: "
          "train.item_table: sharded splits it and its Adam moments over the ranks (a sampled loss), or lower "
          "model.hidden");
    add("other parameters", rest,
        m.user_embedding ? "model.hidden, model.blocks, model.user_embedding" : "model.hidden, model.blocks",
        m.user_embedding ? "model.user_embedding: false drops the U x d user table"
                         : "lower model.hidden or model.blocks");
    add("optimizer state", 2 * (table + rest), "model.hidden, train.item_optimizer, train.item_table",
        sharded ? "Adam keeps two moments of every parameter, those of the item table for this rank's block only: "
                  "more ranks shrink them"
                : "Adam keeps two full-size moments of every parameter (lazy_adam too: it keeps Adam's layout); "
                  "they are replicated, so more ranks do not help: train.item_table: sharded splits the item "
                  "table's over the ranks");
  }

  // Gradients: everything but the table at its size; the table dense for ce
  // (it scores every item), as touched rows for the sampled losses plus the
  // dense gradient they are scattered into under item_optimizer adam.
  void gradients() {
    add("gradients (other parameters)", rest, "model.hidden, model.blocks", "lower model.hidden or model.blocks");
    if (ce) {
      // ce reads M twice (the input lookup, the scores over items 1..I): backward
      // makes a dense gradient for each and their sum, three at its peak
      // (measured with the same mechanism: docs/large_catalogs.md).
      add("item gradient (dense)", 3 * table, "train.loss",
          "train.loss ce needs dense (I+1) x d gradients; a sampled loss (sampled_softmax, gbce, bce) with "
          "train.exchange: sparse and train.item_optimizer: lazy_adam avoids it");
      return;
    }
    add("item gradient (rows)", U * d * kFloat, loss.row_keys, "lower train.batch_size or train.negatives");
    // One rank keeps the rows and Adam steps the whole table from them
    // (reducer.h); several ranks scatter them into a dense gradient.
    if (t.item_optimizer == ItemOptimizer::Adam && world_size > 1 && !sharded)
      add("item gradient (dense)", table, "train.item_optimizer",
          "train.item_optimizer: adam scatters the rows into a dense (I+1) x d gradient; train.exchange: sparse and "
          "train.item_optimizer: lazy_adam avoid it");
  }

  // Exchange buffers, several ranks only: the dense all-reduce's flat bucket
  // is a copy of every gradient; the sparse exchange gathers every rank's
  // ids (int64) and rows and sums them into the touched rows of all ranks.
  void exchange() {
    if (sharded) {
      // Three all-to-alls (item_shard.h): ids asked and rows served (at most every rank's U), rows
      // fetched, gradients returned and received (ids and rows); the dense bucket of the other parameters.
      add("exchange buffers (sharded)", Sat(world_size) * U * (8 + d * kFloat) * 2 + U * d * kFloat + rest,
          "train.batch_size, train.negatives, world size", "lower train.batch_size or train.negatives");
      return;
    }
    if (world_size == 1) return;
    const Sat dense = table + rest;
    const Sat sparse = world_size * U * (8 + d * kFloat) + min(rows, world_size * U) * d * kFloat;
    if (ce || t.exchange == Exchange::Dense)
      add("exchange buffers (dense)", dense, "train.exchange",
          ce ? "train.loss ce always exchanges densely: use a sampled loss with train.exchange: sparse"
             : "train.exchange: sparse sends only the touched rows");
    else if (t.exchange == Exchange::Sparse)
      add("exchange buffers (sparse)", sparse, "train.exchange, train.batch_size, world size",
          "lower train.batch_size or train.negatives");
    else
      add("exchange buffers (auto: the larger of dense and sparse)", max(dense, sparse), "train.exchange",
          "train.exchange: sparse never builds the dense bucket");
  }

  // Activations kept for backward, per token of the N (model.cpp): the
  // embedding's dropout mask and output; per block the LayerNorm output,
  // q, k, v, the residual sum, the FFN's LayerNorm output, ReLU output,
  // two dropout masks, the first dropout's output and the block output
  // (11 d; 8 d without dropout); the final LayerNorm output; about 4 d of
  // gradients in flight during backward. Attention keeps its softmax
  // (and the weights after dropout) per sequence and head: n x n each.
  // Batch tensors (seq, pos [B,n], neg [B,n] bce or [B,n,k] gbce) and the
  // packing (4 x [N]) are int64. Of those, the activation output, its
  // dropout mask and output have the FFN's inner width f (3 f; 1 f without
  // dropout). The variants add W_O's output and its dropout (2 d a block)
  // and the embedding LayerNorm's output (d). Then the loss's own buffers.
  void activations() {
    const Sat f = m.ffn_hidden > 0 ? m.ffn_hidden : m.hidden;
    const Sat per_block = (dropout ? 8 : 7) * d + (dropout ? 3 : 1) * f + (m.attention_output ? 2 * d : Sat(0));
    const Sat per_token = ((dropout ? 2 : 1) + 1 + 4 + (m.embedding_norm ? 1 : 0)) * d + Sat(m.blocks) * per_block;
    const Sat attention = Sat(m.blocks) * (dropout ? 2 : 1) * Sat(m.heads) * B * n * n;
    const Sat bytes = (per_token * N + attention) * kFloat + ((2 + loss.negatives_per_cell) * B * n + 4 * N) * 8;
    add("activations", bytes, "train.batch_size, model.maxlen, model.hidden, model.blocks, model.heads",
        "lower train.batch_size or model.maxlen (N = batch_size x maxlen tokens, an upper bound)");
    add(loss.buffers.name, loss.buffers.bytes, loss.buffers.keys, loss.buffers.advice);
  }

  // Data: the shard's items (int32), its offsets and the split's user lists
  // (three int64 a user), the whole store's offsets read at load, the
  // sampler's queued batches (seq, pos [B,n], neg [B,n] or [B,n,k] int64).
  // The id maps are not loaded for training.
  void data() {
    const Sat local_users = (num_users_total + world_size - 1) / world_size;
    const Sat queued = Sat(std::max(1, config.data.sampler_threads)) * (Sat(config.data.prefetch) + 1) *
                       (2 + loss.negatives_per_cell) * B * n * 8;
    add("data", Sat(local_interactions) * 4 + local_users * 3 * 8 + (Sat(num_users_total) + 1) * 8 + queued,
        "data.path (interactions), data.prefetch", "each rank holds only its shard: more ranks shrink this one");
  }

  // Evaluation: CPU, one score block per thread, the users' vectors, the
  // forward pass of batch_users sequences (no graph: a few [users,n,d] at a
  // time) and the sampled protocol's gathered negatives and their products.
  void evaluation() {
    const Sat users = e.batch_users;
    Sat bytes = users * d * kFloat + 4 * users * n * d * kFloat + users * n * 4;
    for (const auto& p : e.protocols)
      if (p == Protocol::Sampled)
        bytes = bytes + 2 * users * Sat(e.sampled_negatives) * d * kFloat + users * Sat(e.sampled_negatives) * 8;
    std::string keys = "eval.batch_users";
    if (device.is_cpu()) {
      bytes = bytes + Sat(resolve_threads(t.threads)) * kEvalBlock;
    } else {
      bytes = bytes + Sat(e.memory_mb) * kMiB;
      keys += ", eval.memory_mb";
    }
    add("evaluation buffers", bytes, keys,
        device.is_cpu() ? "lower eval.batch_users" : "lower eval.memory_mb or eval.batch_users");
  }

  // Checkpoints are built in memory (parameters and both moments), then
  // copied into one string: about twice the three tables while one is written.
  void checkpoints() {
    if (!config.checkpoint.dir.empty())
      add("checkpoint buffers", 2 * 3 * (table + rest), "checkpoint.dir",
          "checkpoints are built in memory: leave checkpoint.dir empty, or lower model.hidden");
    add("fixed overhead", kFixedOverhead, "", "libtorch, BLAS and MPI themselves: nothing to change");
  }
};

}  // namespace

MemoryPlan plan_memory(const Config& config, int64_t num_items, int64_t num_users_total, int64_t local_interactions,
                       int world_size, torch::Device device, MemoryUse use) {
  Planner p(config, num_items, num_users_total, local_interactions, world_size, device, use);
  p.parameters();
  p.gradients();
  p.exchange();
  p.activations();
  p.data();
  p.evaluation();
  p.checkpoints();
  return std::move(p.plan);
}

int64_t available_cpu_memory(const std::string& meminfo_path, const std::vector<std::string>& cgroup_limit_paths) {
  int64_t available = read_meminfo_available(meminfo_path);
  for (const auto& p : cgroup_limit_paths) {
    const int64_t limit = read_cgroup_limit(p);
    if (limit < 0) continue;
    available = available < 0 ? limit : std::min(available, limit);
    break;
  }
  return available;
}

int64_t available_memory(torch::Device device) {
  if (device.is_cuda()) return detail::cuda_free_memory(device.has_index() ? device.index() : 0);
  if (!device.is_cpu()) return -1;
  return available_cpu_memory("/proc/meminfo", {"/sys/fs/cgroup/memory.max",                      // v2
                                                "/sys/fs/cgroup/memory/memory.limit_in_bytes"});  // v1
}

MemoryBudget memory_budget(const Config& config, torch::Device device) {
  if (config.runtime.memory_mb > 0) return {config.runtime.memory_mb * kMiB, "runtime.memory_mb"};
  const int64_t available = available_memory(device);
  if (available < 0) return {-1, "unknown (set runtime.memory_mb to check the plan)"};
  return {available,
          device.is_cpu() ? "the machine's available memory (MemAvailable, cgroup limit)" : "the device's free memory"};
}

std::string format_bytes(int64_t bytes) {
  if (bytes == std::numeric_limits<int64_t>::max()) return "over 8 EiB";  // a saturated estimate
  char buf[32];
  const double b = static_cast<double>(bytes);
  if (bytes >= (int64_t{1} << 30))
    std::snprintf(buf, sizeof(buf), "%.2f GiB", b / (1 << 30));
  else if (bytes >= (int64_t{1} << 20))
    std::snprintf(buf, sizeof(buf), "%.1f MiB", b / (1 << 20));
  else
    std::snprintf(buf, sizeof(buf), "%.1f KiB", b / (1 << 10));
  return buf;
}

std::string sharding_advice(const Config& config, int64_t num_items, int64_t num_users_total,
                            int64_t local_interactions, torch::Device device, MemoryUse use, int64_t budget_bytes) {
  if (config.train.item_table != ItemTable::Replicated || config.train.loss == LossKind::Ce) return "";
  Config sharded = config;
  sharded.train.item_table = ItemTable::Sharded;
  for (int ranks = 2; ranks <= (1 << 16); ranks *= 2) {
    const MemoryPlan p = plan_memory(sharded, num_items, num_users_total, local_interactions, ranks, device, use);
    if (p.total() <= budget_bytes)
      return detail::cat(
          "train.item_table: sharded (one block of the item table and its optimizer state a rank) "
          "fits on ",
          ranks, " ranks with a budget like this one each: about ", format_bytes(p.total()),
          " a rank (docs/large_catalogs.md)");
  }
  return "";
}

void check_memory_plan(const MemoryPlan& plan, const MemoryBudget& budget) {
  const int64_t total = plan.total();
  if (total == std::numeric_limits<int64_t>::max()) {
    // Past 8 EiB (the sum saturated): refused whatever the budget, even an unknown one.
    const MemoryComponent* biggest = nullptr;
    for (const auto& c : plan.components)
      if (!biggest || c.bytes > biggest->bytes) biggest = &c;
    SASREC_FAIL(Config, "memory plan: this config needs more than 8 EiB per rank (the estimate overflows 64 bits)",
                biggest
                    ? detail::cat("; the largest part is ", biggest->name, " [", biggest->keys, "]: ", biggest->advice)
                    : std::string(),
                ". No machine has that: change these settings");
  }
  if (budget.bytes < 0 || total <= budget.bytes) return;
  std::vector<const MemoryComponent*> by_size;
  for (const auto& c : plan.components)
    if (!c.keys.empty()) by_size.push_back(&c);  // the fixed overhead has no setting to change
  std::stable_sort(by_size.begin(), by_size.end(),
                   [](const MemoryComponent* a, const MemoryComponent* b) { return a->bytes > b->bytes; });
  std::ostringstream os;
  os << "memory plan: this config needs about " << format_bytes(total) << " per rank (an estimate), over the budget of "
     << format_bytes(budget.bytes) << " (" << budget.source << "). Largest:";
  for (size_t i = 0; i < std::min<size_t>(3, by_size.size()); ++i) {
    const MemoryComponent& c = *by_size[i];
    os << (i ? ";" : "") << " " << c.name << " " << format_bytes(c.bytes);
    if (!c.keys.empty()) os << " [" << c.keys << "]";
    os << ": " << c.advice;
  }
  os << ". Change one of these settings";
  if (!plan.advice.empty()) os << ". Or: " << plan.advice;
  if (budget.source == "runtime.memory_mb") os << ", or raise runtime.memory_mb if the machine has the memory";
  throw Error(ErrorDomain::Config, os.str());
}

std::vector<std::string> format_memory_plan(const MemoryPlan& plan, const MemoryBudget& budget) {
  std::vector<std::string> lines;
  size_t width = 0;
  for (const auto& c : plan.components) width = std::max(width, c.name.size());
  for (const auto& c : plan.components) {
    std::string line = "memory plan: " + c.name + std::string(width - c.name.size(), ' ') + "  ";
    const std::string size = format_bytes(c.bytes);
    line += std::string(size.size() < 10 ? 10 - size.size() : 0, ' ') + size;
    if (!c.keys.empty()) line += "  (" + c.keys + ")";
    lines.push_back(line);
  }
  lines.push_back(detail::cat("memory plan: total ", format_bytes(plan.total()), " per rank (estimate), budget ",
                              budget.bytes < 0 ? std::string("unknown") : format_bytes(budget.bytes), " (",
                              budget.source, ")"));
  return lines;
}

nlohmann::json memory_plan_event(const MemoryPlan& plan, const MemoryBudget& budget) {
  nlohmann::json components = nlohmann::json::array();
  for (const auto& c : plan.components) components.push_back({{"name", c.name}, {"bytes", c.bytes}, {"keys", c.keys}});
  return {{"event", "memory_plan"},
          {"total_bytes", plan.total()},
          {"budget_bytes", budget.bytes},
          {"budget_source", budget.source},
          {"components", components}};
}

}  // namespace sasrec
