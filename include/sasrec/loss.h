// loss.h: training losses over the model's output and the item rows.
//
// Each returns the SUM over non-ignored targets; the trainer divides by the
// global target count (summed over ranks), so the gradient of a step is the
// same whether its sequences sit on one rank or many. s(x) = F.M[x] is the
// logit of item x; K negatives are shared by the whole batch, drawn with
// replacement; a shared negative equal to a row's target (accidental hit)
// is removed from that row.
//   bce             paper: one sampled negative per target,
//                   -log sig(s(pos)) - log(1 - sig(s(neg)))
//   ce              full softmax over items 1..I (Klenitskiy & Vasilev 2023)
//   sampled_softmax softmax over the target and the K shared negatives with
//                   the log-Q correction of TensorFlow's sampled_softmax_loss
//                   (Jean et al. 2015; Yi et al. 2019): every logit, the
//                   target's too, minus log(K q(x)), the log of x's expected
//                   count among the K draws. Uniform proposal: a constant,
//                   which cancels and is left out (SampledTerms undefined).
//   gbce            gSASRec (Petrov & Macdonald, RecSys 2023):
//                   beta softplus(-s(pos)) + sum_k softplus(s(neg_k)) over the
//                   K shared uniform negatives, beta = alpha (t (1 - 1/alpha)
//                   + 1/alpha), alpha = K / (I - 1) (gbce_beta below); t = 0
//                   is plain BCE with K negatives. The paper draws k negatives
//                   per position; here one uniform draw of K serves the whole
//                   batch, so each target's negatives are still a uniform
//                   sample of K items (minus accidental hits), as the
//                   calibration assumes; but the rows share one noisy draw,
//                   and on Beauty that keeps gbce from learning where
//                   per-row negatives learn (docs/large_catalogs.md, Losses).
#pragma once

#include <torch/torch.h>

#include "sasrec/config.h"
#include "sasrec/sampler.h"

namespace sasrec {

// What the sampled losses need beyond the rows, computed from GLOBAL item
// ids (the rows table may be a local one, see loss_sum_rows).
struct SampledTerms {
  torch::Tensor pos_log_q;     // [N] float: log(K q(pos)); undefined: uniform proposal (sampled_softmax)
  torch::Tensor shared_log_q;  // [K] float: log(K q(shared)); defined exactly when pos_log_q is
  double gbce_beta = 1;        // gbce: the positive term's weight (gbce_beta())
};

// gSASRec's beta for K uniform negatives out of I items and calibration t:
// alpha = K / (I - 1), beta = alpha (t (1 - 1/alpha) + 1/alpha) = 1 - t (1 - alpha).
double gbce_beta(int64_t negatives, int64_t num_items, double t);

// h [N,D] one row per target; rows [U,D] the item rows the indices below
// refer to: for bce / sampled_softmax / gbce any table (the full one, or a
// batch-local one with pos / neg / shared remapped to its row indices); for
// ce the full table [I+1,D] with row = item id. pos [N] targets (all real
// items), neg [N] one negative each (bce; else undefined), shared [K]
// (sampled_softmax, gbce; else undefined) -> scalar sum over the N targets.
torch::Tensor loss_sum_rows(LossKind kind, const torch::Tensor& h, const torch::Tensor& rows,
                            const torch::Tensor& pos, const torch::Tensor& neg, const torch::Tensor& shared,
                            const SampledTerms& terms = {});

// features [B,T,D] with the batch's [B,T] targets (0: ignored), item_weight
// the full table [I+1,D]; log_kq [I+1] log(K q(i)) by item id (popularity
// proposal; undefined: uniform) -> scalar sum over targets. The batch's
// shared_log_q is used when set, else gathered from log_kq.
torch::Tensor loss_sum(LossKind kind, const torch::Tensor& features, const torch::Tensor& item_weight,
                       const Batch& batch, const torch::Tensor& log_kq = {}, double gbce_beta = 1);

}  // namespace sasrec
