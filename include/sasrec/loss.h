// loss.h: training losses over the model's output and the item rows.
//
// Each returns the SUM over non-ignored targets; the trainer divides by the
// global target count (summed over ranks), so the gradient of a step is the
// same whether its sequences sit on one rank or many. s(x) = F.M[x] is the
// logit of item x.
//   bce             paper: one sampled negative per target,
//                   -log sig(s(pos)) - log(1 - sig(s(neg)))
//   ce              full softmax over items 1..I (Klenitskiy & Vasilev 2023)
//   sampled_softmax softmax over the target and K negatives shared by the
//                   whole batch (drawn with replacement; one equal to a row's
//                   target, an accidental hit, is removed from that row),
//                   with the log-Q correction of TensorFlow's
//                   sampled_softmax_loss (Jean et al. 2015; Yi et al. 2019):
//                   every logit, the target's too, minus log(K q(x)), the log
//                   of x's expected count among the K draws. Uniform
//                   proposal: a constant, which cancels and is left out
//                   (SampledTerms undefined).
//   gbce            gSASRec (Petrov & Macdonald, RecSys 2023), k uniform
//                   negatives drawn for EACH target, as in the paper:
//                   beta softplus(-s(pos)) + sum_j softplus(s(neg_j)),
//                   beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha =
//                   k / (I - 1) (gbce_beta below); t = 0 is plain BCE with k
//                   negatives. A negative equal to its target (accidental
//                   hit) loses its term. (A single draw of K shared by the
//                   batch, tried first, did not learn on Beauty:
//                   docs/large_catalogs.md, Losses.)
#pragma once

#include <torch/torch.h>

#include "sasrec/config.h"
#include "sasrec/sampler.h"

namespace sasrec {

// What the sampled losses need beyond the rows, computed from GLOBAL item
// ids (the rows table may be a local one, see loss_sum_rows).
struct SampledTerms {
  torch::Tensor pos_log_q;     // [N] float: log(K q(pos)); undefined: uniform proposal (sampled_softmax)
  torch::Tensor shared_log_q;  // [K] float: log(K q(shared)); defined exactly when pos_log_q is (sampled_softmax)
  double gbce_beta = 1;        // gbce: the positive term's weight (gbce_beta())
};

// gSASRec's beta for k uniform negatives per target out of I items and
// calibration t: alpha = k / (I - 1), beta = alpha (t (1 - 1/alpha) + 1/alpha)
// = 1 - t (1 - alpha).
double gbce_beta(int64_t negatives, int64_t num_items, double t);

// h [N,D] one row per target; rows [U,D] the item rows the indices below
// refer to: for bce / sampled_softmax / gbce any table (the full one, or a
// batch-local one with pos / neg / shared remapped to its row indices); for
// ce the full table [I+1,D] with row = item id. pos [N] targets (all real
// items), neg [N] one negative each (bce) or [N,k] k each (gbce), else
// undefined; shared [K] (sampled_softmax; else undefined) -> scalar sum over
// the N targets; with `weight` [N] (0 or 1: a captured step's padding
// tokens weigh 0, step_graph.h) the sum of each target's term times its weight.
torch::Tensor loss_sum_rows(LossKind kind, const torch::Tensor& h, const torch::Tensor& rows, const torch::Tensor& pos,
                            const torch::Tensor& neg, const torch::Tensor& shared, const SampledTerms& terms = {},
                            const torch::Tensor& weight = {});

// features [B,T,D] with the batch's [B,T] targets (0: ignored) and its
// negatives ([B,T] bce, [B,T,k] gbce; sampler.h), item_weight
// the full table [I+1,D]; log_kq [I+1] log(K q(i)) by item id (popularity
// proposal; undefined: uniform) -> scalar sum over targets. The batch's
// shared_log_q is used when set, else gathered from log_kq.
torch::Tensor loss_sum(LossKind kind, const torch::Tensor& features, const torch::Tensor& item_weight,
                       const Batch& batch, const torch::Tensor& log_kq = {}, double gbce_beta = 1);

}  // namespace sasrec
