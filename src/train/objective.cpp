// objective.cpp: the four losses as Objectives (see objective.h); their
// arithmetic is loss.cpp's.
#include "sasrec/objective.h"

#include <algorithm>

#include "sasrec/error.h"

namespace sasrec {
namespace {

constexpr int64_t kFloat = 4;

// bce (the paper): one negative per target position, drawn by the sampler.
class BceObjective final : public Objective {
 public:
  BceObjective() : Objective(LossKind::Bce) {}
  void configure(SamplerOptions& o) const override {
    o.per_position_negatives = true, o.negatives_per_target = 0, o.shared_negatives = 0;
  }
  SampledTerms terms(const StepInputs&) const override { return {}; }
  LossMemory memory(Sat tokens, Sat d, Sat items) const override {
    // The gathered positive and negative rows [2N,d], their product, then their gradients.
    return {min(items + 1, 2 * tokens),
            "train.batch_size, model.maxlen",
            1,
            {"loss buffers (bce)", (4 * tokens * d * kFloat).value(), "train.batch_size, model.maxlen, model.hidden",
             "lower train.batch_size"}};
  }
};

// ce: the full softmax over items 1..I (Klenitskiy & Vasilev 2023).
class CeObjective final : public Objective {
 public:
  CeObjective() : Objective(LossKind::Ce) {}
  void configure(SamplerOptions& o) const override {
    o.per_position_negatives = false, o.negatives_per_target = 0, o.shared_negatives = 0;
  }
  bool gathers_item_rows() const override { return false; }
  SampledTerms terms(const StepInputs&) const override { return {}; }
  LossMemory memory(Sat tokens, Sat, Sat items) const override {
    // Logits, log-softmax and the gradient, each [N,I].
    return {items + 1,
            "items",
            1,
            {"loss buffers (ce)", (3 * tokens * items * kFloat).value(), "train.loss, train.batch_size, model.maxlen",
             detail::cat("train.loss ce scores every item: N x I x 4 bytes for the logits, the log-softmax and their "
                         "gradient (N = ",
                         tokens.value(), " tokens, I = ", items.value(),
                         "); use train.loss sampled_softmax or gbce, or lower train.batch_size; more ranks do not "
                         "help (batch_size is per rank)")}};
  }
};

// sampled_softmax: K negatives shared by the batch, uniform or from the
// popularity proposal, log-Q corrected (the table of log(K q) lives here).
class SampledSoftmaxObjective final : public Objective {
 public:
  SampledSoftmaxObjective(int64_t negatives, std::vector<int64_t> counts, torch::Device device)
      : Objective(LossKind::SampledSoftmax), negatives_(negatives), counts_(std::move(counts)) {
    if (!counts_.empty()) log_kq_ = log_expected_counts(counts_, negatives_).to(device);
  }
  void configure(SamplerOptions& o) const override {
    o.per_position_negatives = false, o.negatives_per_target = 0, o.shared_negatives = negatives_;
    o.proposal_counts = counts_;  // empty: uniform
  }
  // Popularity: the targets' log(K q) from the table; the shared negatives'
  // came with the batch, drawn from the same counts. Uniform: none (constant).
  SampledTerms terms(const StepInputs& in) const override {
    if (!log_kq_.defined()) return {};
    return {log_kq_.index_select(0, in.pos), in.shared_log_q, 1};
  }
  LossMemory memory(Sat tokens, Sat d, Sat items) const override {
    // Logits [N,K+1], their gradient and a copy, the accidental-hit mask; the K rows and their gradient.
    const Sat K = negatives_;
    return {
        min(items + 1, tokens + K),
        "train.batch_size, model.maxlen, train.negatives",
        1,
        {"loss buffers (sampled_softmax)", (3 * tokens * (K + 1) * kFloat + tokens * K + 2 * K * d * kFloat).value(),
         "train.negatives, train.batch_size, model.maxlen", "lower train.negatives or train.batch_size"}};
  }

 private:
  int64_t negatives_;
  std::vector<int64_t> counts_;  // [I+1] the popularity proposal's counts over all ranks; empty: uniform
  torch::Tensor log_kq_;         // [I+1] float log(K q(i)) on the step's device; undefined: uniform
};

// gbce (gSASRec): k uniform negatives per target and the calibrated positive term.
class GbceObjective final : public Objective {
 public:
  GbceObjective(int64_t negatives, int64_t num_items, double t)
      : Objective(LossKind::Gbce), negatives_(negatives), beta_(gbce_beta(negatives, num_items, t)) {}
  void configure(SamplerOptions& o) const override {
    o.per_position_negatives = false, o.negatives_per_target = negatives_, o.shared_negatives = 0;
  }
  SampledTerms terms(const StepInputs&) const override { return {{}, {}, beta_}; }
  LossMemory memory(Sat tokens, Sat d, Sat items) const override {
    // The gathered rows [N,k+1,d], their gradient and a product-sized
    // workspace; logits [N,k+1], their gradient and softplus; their ids
    // (int64) and the accidental-hit mask [N,k].
    const Sat k = negatives_;
    return {min(items + 1, tokens + tokens * k),
            "train.batch_size, model.maxlen, train.negatives",
            negatives_,
            {"loss buffers (gbce)",
             (3 * tokens * (k + 1) * d * kFloat + 3 * tokens * (k + 1) * kFloat + tokens * (k + 1) * 8 + tokens * k)
                 .value(),
             "train.negatives, train.batch_size, model.maxlen, model.hidden",
             "gbce draws train.negatives per target: lower train.negatives or train.batch_size"}};
  }

 private:
  int64_t negatives_;
  double beta_;
};

}  // namespace

std::unique_ptr<Objective> Objective::make(const TrainConfig& train, int64_t num_items,
                                           std::vector<int64_t> item_counts, torch::Device device) {
  switch (train.loss) {
    case LossKind::Bce: return std::make_unique<BceObjective>();
    case LossKind::Ce: return std::make_unique<CeObjective>();
    case LossKind::SampledSoftmax:
      if (train.proposal == Proposal::Uniform)
        item_counts.clear();
      else
        SASREC_CHECK(static_cast<int64_t>(item_counts.size()) == num_items + 1 || item_counts.empty(),
                     "the popularity proposal needs [I+1] counts");
      return std::make_unique<SampledSoftmaxObjective>(train.negatives, std::move(item_counts), device);
    case LossKind::Gbce: return std::make_unique<GbceObjective>(train.negatives, num_items, train.gbce_t);
  }
  SASREC_FAIL(Check, "unknown loss");
}

torch::Tensor Objective::loss_sum(const torch::Tensor& h, const torch::Tensor& rows, const StepInputs& in,
                                  const SampledTerms& terms, const torch::Tensor& weight) const {
  return loss_sum_rows(kind_, h, rows, in.pos, in.neg, in.shared, terms, weight);
}

}  // namespace sasrec
