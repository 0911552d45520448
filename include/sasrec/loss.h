// loss.h: training losses over the model's output and the item table.
//
// Each returns the SUM over non-ignored targets; the trainer divides by the
// global target count (summed over ranks), so the gradient of a step is the
// same whether its sequences sit on one rank or many.
//   bce             paper: one sampled negative per target,
//                   -log s(F.M[pos]) - log(1 - s(F.M[neg]))
//   ce              full softmax over items 1..I (Klenitskiy & Vasilev 2023)
//   sampled_softmax softmax over the target and K negatives shared by the
//                   batch (uniform proposal: log-Q is a constant and cancels),
//                   accidental hits (a negative equal to the target) removed
#pragma once

#include <torch/torch.h>

#include "sasrec/config.h"
#include "sasrec/sampler.h"

namespace sasrec {

// h [N,D] one row per target, pos [N] target items (all non-zero), neg [N]
// one negative each (bce; else undefined), shared [K] (sampled_softmax; else
// undefined), item_weight [I+1,D] -> scalar sum over the N targets.
torch::Tensor loss_sum_rows(LossKind kind, const torch::Tensor& h, const torch::Tensor& item_weight,
                            const torch::Tensor& pos, const torch::Tensor& neg, const torch::Tensor& shared);

// features [B,T,D] with the batch's [B,T] targets (0: ignored) -> scalar sum over targets.
torch::Tensor loss_sum(LossKind kind, const torch::Tensor& features, const torch::Tensor& item_weight,
                       const Batch& batch);

}  // namespace sasrec
