// loss.cpp: bce, ce and sampled_softmax (see loss.h).
#include "sasrec/loss.h"

#include <limits>

#include "sasrec/error.h"

namespace sasrec {

torch::Tensor loss_sum_rows(LossKind kind, const torch::Tensor& h, const torch::Tensor& item_weight,
                            const torch::Tensor& pos, const torch::Tensor& neg, const torch::Tensor& shared) {
  switch (kind) {
    case LossKind::Bce: {
      SASREC_CHECK(neg.defined(), "bce needs per-position negatives");
      // One gather for both: a single dense gradient for the item table instead of two.
      auto rows = item_weight.index_select(0, torch::cat({pos, neg})).view({2, pos.size(0), -1});  // [2,N,D]
      auto logits = (h.unsqueeze(0) * rows).sum(-1);                                               // [2,N]
      // -log sigmoid(p) = softplus(-p); -log(1 - sigmoid(n)) = softplus(n)
      return torch::softplus(logits[0].neg()).sum() + torch::softplus(logits[1]).sum();
    }
    case LossKind::Ce: {
      auto logits = torch::matmul(h, item_weight.slice(0, 1).t());  // [N,I] items 1..I
      return torch::nn::functional::cross_entropy(
          logits, pos - 1, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
    }
    case LossKind::SampledSoftmax: {
      SASREC_CHECK(shared.defined(), "sampled_softmax needs shared negatives");
      auto pos_logit = (h * item_weight.index_select(0, pos)).sum(-1, /*keepdim=*/true);  // [N,1]
      auto neg_logit = torch::matmul(h, item_weight.index_select(0, shared).t());         // [N,K]
      auto hit = pos.unsqueeze(1) == shared.unsqueeze(0);                                 // [N,K]
      neg_logit = neg_logit.masked_fill(hit, -std::numeric_limits<float>::infinity());
      auto logits = torch::cat({pos_logit, neg_logit}, 1);                                 // [N,1+K]
      return (torch::logsumexp(logits, 1) - pos_logit.squeeze(1)).sum();
    }
    case LossKind::Gbce:
      SASREC_FAIL(Config, "train.loss gbce is being built on branch issue6-loss");
  }
  SASREC_CHECK(false, "unknown loss");
  return {};
}

torch::Tensor loss_sum(LossKind kind, const torch::Tensor& features, const torch::Tensor& item_weight,
                       const Batch& batch) {
  // Only positions with a target take part: gather them once.
  auto where = (batch.pos.view(-1) != 0).nonzero().squeeze(1);                 // [N]
  auto h = features.reshape({-1, features.size(-1)}).index_select(0, where);  // [N,D]
  auto pos = batch.pos.view(-1).index_select(0, where);                       // [N]
  auto neg = batch.neg.defined() ? batch.neg.view(-1).index_select(0, where) : torch::Tensor();
  return loss_sum_rows(kind, h, item_weight, pos, neg, batch.shared);
}

}  // namespace sasrec
