// optimizer.h: Adam as torch::optim::Adam computes it, in one pass per tensor.
//
// torch::optim::Adam's step is ~10 tensor ops per parameter (mul_, add_,
// addcmul_, sqrt, div, add_, addcdiv_, ...), each a sweep over the tensor:
// 6.5 ms of a 39 ms profiled Beauty step. FusedAdam keeps Adam's state,
// options, param groups and serialization (checkpoints do not change) and
// overrides step() with one parallel loop per parameter computing the same
// update (L2 weight decay added to the gradient, bias-corrected moments,
// eps outside the square root). Parameters without a gradient are skipped,
// so zero_grad may drop gradients instead of filling them with zeros.
// amsgrad is not supported; on non-CPU tensors it defers to Adam::step().
//
// step_rows is lazy Adam for the item table (train.item_optimizer:
// lazy_adam, docs/large_catalogs.md): only the given rows' moments and
// weights move, in O(rows x d); the step count, and with it the bias
// correction, advances once per call, as torch.optim.SparseAdam's.
//
// Decoupled weight decay (AdamW, Loshchilov & Hutter 2019; train.weight_decay)
// shrinks the chosen parameters by lr * wd at every step, apart from the
// gradient and so apart from Adam's moments; scheduled_lr is the learning
// rate of a step under train.lr_schedule. Neither changes the checkpoints.
#pragma once

#include <torch/torch.h>

#include <unordered_map>

#include "sasrec/config.h"
#include "sasrec/torch_compat.h"

namespace sasrec {

// The learning rate of step `step` (1-based) of a run of `total_steps`: a
// linear warm-up from lr / warmup_steps to lr over the first warmup_steps,
// then lr (constant) or a decay to min_lr at step total_steps (cosine:
// min_lr + (lr - min_lr) (1 + cos(pi p)) / 2, linear: lr - (lr - min_lr) p,
// p the fraction of the steps after the warm-up that are done).
double scheduled_lr(const TrainConfig& train, int64_t step, int64_t total_steps);

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
  // `param` one of this optimizer's 2-d parameters, `ids` [U] unique row
  // indices, `grad_rows` [U,d] their gradient. Weight decay applies to those rows.
  void step_rows(const torch::Tensor& param, const torch::Tensor& ids, const torch::Tensor& grad_rows);
  // Dense Adam on `param` whose gradient is zero but in the rows `ids` [U]
  // (sorted, unique), which carry `grad_rows` [U,d]: every row's moments and
  // weights move, with the arithmetic of step() on the dense gradient (the
  // same floats), without that gradient being written and read (2 x the
  // table's bytes a step). The item table under train.item_optimizer adam.
  void step_dense_rows(const torch::Tensor& param, const torch::Tensor& ids, const torch::Tensor& grad_rows);
  // Adam's state for `p`, created (zero moments, step 0) on first use; the
  // one place that knows how libtorch keys it.
  torch::optim::AdamParamState& state_for(const torch::Tensor& p);
  // Decoupled weight decay `wd` on these parameters (AdamW): w -= lr * wd * w at each step.
  void set_decoupled_weight_decay(const std::vector<torch::Tensor>& params, double wd);
  // Every parameter group's learning rate (a schedule sets it before each step).
  void set_lr(double lr);

 private:
  double decoupled_decay(const torch::Tensor& p) const;
  std::unordered_map<const c10::TensorImpl*, double> decoupled_;  // parameter -> wd
  // parameter -> its key in state_ (a function of the address alone: never stale)
  std::unordered_map<const c10::TensorImpl*, compat::OptimizerStateKey> keys_;
  const torch::optim::AdamOptions& options_for(const torch::Tensor& p) const;
};

}  // namespace sasrec
