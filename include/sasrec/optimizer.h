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
#pragma once

#include <torch/torch.h>

namespace sasrec {

class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace sasrec
