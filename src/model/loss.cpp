// loss.cpp: bce, ce, sampled_softmax and gbce (see loss.h).
#include "sasrec/loss.h"

#include <limits>

#include "sasrec/error.h"

namespace sasrec {
namespace {

// The logits of the shared-negative loss (sampled_softmax): target [N,1], negatives [N,K],
// and the accidental hits [N,K] (a negative equal to the row's target; ids
// compared, so local row indices work as well as item ids).
struct SharedLogits {
  torch::Tensor pos, neg, hit;
};
SharedLogits shared_logits(const char* loss, const torch::Tensor& h, const torch::Tensor& rows,
                           const torch::Tensor& pos, const torch::Tensor& shared) {
  SASREC_CHECK(shared.defined(), loss, " needs shared negatives");
  return {(h * rows.index_select(0, pos)).sum(-1, /*keepdim=*/true),  // [N,1]
          torch::matmul(h, rows.index_select(0, shared).t()),         // [N,K]
          pos.unsqueeze(1) == shared.unsqueeze(0)};                   // [N,K]
}

}  // namespace

double gbce_beta(int64_t negatives, int64_t num_items, double t) {
  SASREC_CHECK(negatives >= 1 && num_items >= 2 && t >= 0 && t <= 1, "gbce_beta(", negatives, ", ", num_items, ", ", t,
               ")");
  const double alpha = static_cast<double>(negatives) / static_cast<double>(num_items - 1);
  return alpha * (t * (1 - 1 / alpha) + 1 / alpha);
}

torch::Tensor loss_sum_rows(LossKind kind, const torch::Tensor& h, const torch::Tensor& rows, const torch::Tensor& pos,
                            const torch::Tensor& neg, const torch::Tensor& shared, const SampledTerms& terms,
                            const torch::Tensor& weight) {
  SASREC_CHECK(terms.pos_log_q.defined() == terms.shared_log_q.defined(),
               "log-Q needs both the targets' and the negatives' values");
  SASREC_CHECK(!weight.defined() || (weight.dim() == 1 && weight.size(0) == pos.size(0)), "weight must be [N]");
  // Sum of per-target terms [N], weighted when a weight is given.
  auto total = [&](const torch::Tensor& per_target) {
    return weight.defined() ? (per_target * weight).sum() : per_target.sum();
  };
  switch (kind) {
    case LossKind::Bce: {
      SASREC_CHECK(neg.defined(), "bce needs per-position negatives");
      // One gather for both: a single dense gradient for the item table instead of two.
      auto both = rows.index_select(0, torch::cat({pos, neg})).view({2, pos.size(0), -1});  // [2,N,D]
      auto logits = (h.unsqueeze(0) * both).sum(-1);                                        // [2,N]
      // -log sigmoid(p) = softplus(-p); -log(1 - sigmoid(n)) = softplus(n)
      if (weight.defined()) return total(torch::softplus(logits[0].neg()) + torch::softplus(logits[1]));
      return torch::softplus(logits[0].neg()).sum() + torch::softplus(logits[1]).sum();
    }
    case LossKind::Ce: {
      auto logits = torch::matmul(h, rows.slice(0, 1).t());  // [N,I] items 1..I: rows is the full table
      namespace F = torch::nn::functional;
      if (weight.defined())
        return total(F::cross_entropy(logits, pos - 1, F::CrossEntropyFuncOptions().reduction(torch::kNone)));
      return F::cross_entropy(logits, pos - 1, F::CrossEntropyFuncOptions().reduction(torch::kSum));
    }
    case LossKind::SampledSoftmax: {
      auto [pos_logit, neg_logit, hit] = shared_logits("sampled_softmax", h, rows, pos, shared);
      if (terms.pos_log_q.defined()) {  // log-Q: minus log(K q(x)) on every logit, the target's too
        SASREC_CHECK(terms.pos_log_q.size(0) == pos.size(0) && terms.shared_log_q.size(0) == shared.size(0));
        pos_logit = pos_logit - terms.pos_log_q.unsqueeze(1);
        neg_logit = neg_logit - terms.shared_log_q.unsqueeze(0);
      }
      neg_logit = neg_logit.masked_fill(hit, -std::numeric_limits<float>::infinity());
      auto logits = torch::cat({pos_logit, neg_logit}, 1);  // [N,1+K]
      return total(torch::logsumexp(logits, 1) - pos_logit.squeeze(1));
    }
    case LossKind::Gbce: {
      SASREC_CHECK(!terms.pos_log_q.defined(), "gbce takes uniform negatives, without log-Q");
      SASREC_CHECK(neg.defined() && neg.dim() == 2 && neg.size(0) == pos.size(0),
                   "gbce needs k negatives per target, [N,k]");
      const int64_t n = pos.size(0), k = neg.size(1), d = rows.size(1);
      // One gather for the target and its k negatives (one dense gradient
      // for the rows), then one batched product: logits [N,1+k].
      auto ids = torch::cat({pos.unsqueeze(1), neg}, 1).view(-1);  // [N(1+k)]
      auto logits = torch::bmm(rows.index_select(0, ids).view({n, 1 + k, d}), h.unsqueeze(2)).squeeze(2);
      auto hit = neg == pos.unsqueeze(1);  // [N,k] accidental hits: their term is removed
      // -log sig(s)^beta = beta softplus(-s); -log(1 - sig(s)) = softplus(s).
      if (weight.defined())
        return total(torch::softplus(logits.select(1, 0).neg()) * terms.gbce_beta +
                     torch::softplus(logits.slice(1, 1)).masked_fill(hit, 0).sum(1));
      return torch::softplus(logits.select(1, 0).neg()).sum() * terms.gbce_beta +
             torch::softplus(logits.slice(1, 1)).masked_fill(hit, 0).sum();
    }
  }
  SASREC_CHECK(false, "unknown loss");
  return {};
}

torch::Tensor loss_sum(LossKind kind, const torch::Tensor& features, const torch::Tensor& item_weight,
                       const Batch& batch, const torch::Tensor& log_kq, double gbce_beta) {
  // Only positions with a target take part: gather them once.
  auto where = (batch.pos.view(-1) != 0).nonzero().squeeze(1);                // [N]
  auto h = features.reshape({-1, features.size(-1)}).index_select(0, where);  // [N,D]
  auto pos = batch.pos.view(-1).index_select(0, where);                       // [N]
  torch::Tensor neg;                                                          // [N] (bce) or [N,k] (gbce, from [B,T,k])
  if (batch.neg.defined())
    neg = batch.neg.dim() == 3 ? batch.neg.reshape({-1, batch.neg.size(2)}).index_select(0, where)
                               : batch.neg.view(-1).index_select(0, where);
  SampledTerms terms;
  terms.gbce_beta = gbce_beta;
  if (log_kq.defined()) {
    terms.pos_log_q = log_kq.index_select(0, pos);
    terms.shared_log_q = batch.shared_log_q.defined() ? batch.shared_log_q : log_kq.index_select(0, batch.shared);
  }
  return loss_sum_rows(kind, h, item_weight, pos, neg, batch.shared, terms);
}

}  // namespace sasrec
