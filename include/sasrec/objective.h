// objective.h: the training loss as one object, built once from the config
// (train.loss and the keys it reads: negatives, proposal, gbce_t).
//
// An Objective says which negatives the sampler draws for it (configure),
// whether every read of the item table is a gather of rows (the item-rows
// path, item_rows.h; every loss but ce), owns its constants (gbce's beta,
// sampled_softmax's log(K q) table on the device), computes a step's loss
// SUM from the model's features and the staged step inputs, and tells the
// memory plan what it holds. The arithmetic of each loss is in loss.h; the
// choice between them is made here, once. A new loss is a case of loss.h and
// a subclass in objective.cpp.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "sasrec/config.h"
#include "sasrec/loss.h"
#include "sasrec/memory_plan.h"
#include "sasrec/packing.h"
#include "sasrec/sampler.h"

namespace sasrec {

// What a loss adds to a rank's memory for a step of `tokens` tokens (upper
// bounds, memory_plan.h).
struct LossMemory {
  Sat touched_rows;            // item-table rows a step touches (sampled losses; the table for ce)
  std::string row_keys;        // the config keys touched_rows grows with
  int64_t negatives_per_cell;  // negatives a batch carries per [B,n] cell (int64 each)
  MemoryComponent buffers;     // the loss's own buffers: logits, gathered rows, their gradients
};

class Objective {
 public:
  virtual ~Objective() = default;
  // `item_counts`: training interactions per item over all ranks, [I+1]:
  // the popularity proposal of sampled_softmax draws from them (empty:
  // uniform, or a loss without a proposal). The log-Q table, if any, goes
  // to `device`.
  static std::unique_ptr<Objective> make(const TrainConfig& train, int64_t num_items,
                                         std::vector<int64_t> item_counts = {}, torch::Device device = torch::kCPU);

  LossKind kind() const { return kind_; }
  // The sampler's negatives for this loss (the fields of SamplerOptions it owns).
  virtual void configure(SamplerOptions& options) const = 0;
  // Whether the loss reads the item table only through gathers (bce,
  // sampled_softmax, gbce): the step then copies the rows it touches
  // (item_rows.h). ce scores every item and reads the whole table.
  virtual bool gathers_item_rows() const { return true; }
  // The step's constants looked up by GLOBAL item id, before the item rows
  // remap the inputs to local rows: sampled_softmax's log(K q) of the
  // targets and of the shared negatives, gbce's beta (loss.h).
  virtual SampledTerms terms(const StepInputs& in) const = 0;
  // The loss SUM over the step's targets: h [N,D] features, one row per
  // token of `in`; `rows` the table in.pos / in.neg / in.shared index (the
  // step's item rows, or the whole table for ce); `weight` [N] optional
  // (step_graph.h: padding tokens weigh 0).
  torch::Tensor loss_sum(const torch::Tensor& h, const torch::Tensor& rows, const StepInputs& in,
                         const SampledTerms& terms, const torch::Tensor& weight = {}) const;
  // Its share of a step's memory (memory_plan.h).
  virtual LossMemory memory(Sat tokens, Sat hidden, Sat items) const = 0;

 protected:
  explicit Objective(LossKind kind) : kind_(kind) {}

 private:
  LossKind kind_;
};

}  // namespace sasrec
