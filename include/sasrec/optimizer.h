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
#pragma once

#include <torch/torch.h>

namespace sasrec {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
  // `param` one of this optimizer's 2-d parameters, `ids` [U] unique row
  // indices, `grad_rows` [U,d] their gradient. Weight decay applies to those rows.
  void step_rows(const torch::Tensor& param, const torch::Tensor& ids, const torch::Tensor& grad_rows);
  // Adam's state for `p`, created (zero moments, step 0) on first use; the
  // one place that knows how libtorch keys it.
  torch::optim::AdamParamState& state_for(const torch::Tensor& p);

 private:
  const torch::optim::AdamOptions& options_for(const torch::Tensor& p) const;
};

}  // namespace sasrec
