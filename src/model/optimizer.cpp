// optimizer.cpp: FusedAdam (see optimizer.h).
#include "sasrec/optimizer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "sasrec/error.h"
#include "sasrec/fused_layers.h"
#include "sasrec/torch_compat.h"

namespace sasrec {
namespace {

// One Adam step's constants: torch's update with L2 weight decay added to the
// gradient, bias-corrected moments, eps outside the square root; `keep`
// = 1 - lr * decoupled weight decay scales the weights first (AdamW; 1: off).
struct AdamCoefficients {
  float b1, b2, c1, c2, wd, eps, step_size, inv_sqrt_bias2, keep;
  AdamCoefficients(const torch::optim::AdamOptions& o, int64_t step, double decoupled = 0) {
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    const double bias1 = 1 - std::pow(beta1, static_cast<double>(step));
    const double bias2 = 1 - std::pow(beta2, static_cast<double>(step));
    b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
    c1 = static_cast<float>(1 - beta1), c2 = static_cast<float>(1 - beta2);
    wd = static_cast<float>(o.weight_decay()), eps = static_cast<float>(o.eps());
    step_size = static_cast<float>(o.lr() / bias1);
    inv_sqrt_bias2 = static_cast<float>(1 / std::sqrt(bias2));
    keep = static_cast<float>(1 - o.lr() * decoupled);
  }
  // n elements: weights w, their gradient g (null: zero), moments m and v.
  void apply(float* w, const float* g, float* m, float* v, int64_t n) const;
  void apply_zero(float* w, float* m, float* v, int64_t n) const { apply(w, nullptr, m, v, n); }
};

// Branch-free: vectorizes (no errno from sqrt); compiled for AVX2 (fused_layers.h: its square
// root and division an element are the pass's bound, and 512-bit lanes are slower at them on Zen 4).
SASREC_CLONES_256 void adam_update(const AdamCoefficients& c, float* w, const float* g, float* m, float* v, int64_t n) {
  const float b1 = c.b1, b2 = c.b2, c1 = c.c1, c2 = c.c2, wd = c.wd, eps = c.eps, step_size = c.step_size,
              inv_sqrt_bias2 = c.inv_sqrt_bias2, keep = c.keep;
  if (g) {
    for (int64_t i = 0; i < n; ++i) {
      const float grad = g[i] + wd * w[i];
      m[i] = m[i] * b1 + grad * c1;
      v[i] = v[i] * b2 + grad * grad * c2;
      w[i] = w[i] * keep - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bias2 + eps);
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {  // a zero gradient: the same arithmetic with 0.0f for g[i]
    const float grad = 0.0f + wd * w[i];
    m[i] = m[i] * b1 + grad * c1;
    v[i] = v[i] * b2 + grad * grad * c2;
    w[i] = w[i] * keep - step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bias2 + eps);
  }
}

void AdamCoefficients::apply(float* w, const float* g, float* m, float* v, int64_t n) const {
  adam_update(*this, w, g, m, v, n);
}

bool fused_supported(const torch::Tensor& p) { return p.device().is_cpu() && p.scalar_type() == torch::kFloat32; }

// body(begin, end) over [0, n) in pieces of `grain` elements (a few microseconds of Adam), taken by
// the threads as they come: at::parallel_for's static halves made the first thread wait for the
// second, which under OMP_WAIT_POLICY=passive wakes 0.1-0.3 ms after the region starts (a futex and,
// in a VM, a halted vCPU); the pass over Beauty's item table is 0.5 ms (docs/results.md).
void parallel_pieces(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
  const int64_t pieces = (n + grain - 1) / grain;
  const int threads = at::get_num_threads();
  if (pieces <= 1 || threads <= 1) {
    if (n > 0) body(0, n);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t p = 0; p < pieces; ++p) body(p * grain, std::min(n, (p + 1) * grain));
}

// Elements in a piece.
constexpr int64_t kGrain = 1 << 14;

}  // namespace

double scheduled_lr(const TrainConfig& train, int64_t step, int64_t total_steps) {
  const double lr = train.lr;
  const int64_t warmup = train.warmup_steps;
  if (warmup > 0 && step <= warmup) return lr * static_cast<double>(std::max<int64_t>(step, 1)) / warmup;
  if (train.lr_schedule == LrSchedule::Constant) return lr;
  const int64_t span = std::max<int64_t>(1, total_steps - warmup);
  const double p = std::clamp(static_cast<double>(step - warmup) / static_cast<double>(span), 0.0, 1.0);
  if (train.lr_schedule == LrSchedule::Linear) return lr - (lr - train.min_lr) * p;
  const double pi = std::acos(-1.0);
  return train.min_lr + (lr - train.min_lr) * 0.5 * (1 + std::cos(pi * p));
}

void FusedAdam::set_decoupled_weight_decay(const std::vector<torch::Tensor>& params, double wd) {
  for (const auto& p : params) {
    options_for(p);  // one of ours
    decoupled_[p.unsafeGetTensorImpl()] = wd;
  }
}

double FusedAdam::decoupled_decay(const torch::Tensor& p) const {
  auto it = decoupled_.find(p.unsafeGetTensorImpl());
  return it == decoupled_.end() ? 0.0 : it->second;
}

void FusedAdam::set_lr(double lr) {
  for (auto& group : param_groups_) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

torch::optim::AdamParamState& FusedAdam::state_for(const torch::Tensor& p) {
  // The state lives where torch::optim::Adam keeps it, so save/load are Adam's. Its key is made
  // once a parameter: libtorch 1.13's is the TensorImpl's address formatted as a string, which
  // cost about 0.7 us a parameter a step (Beauty's dense parameters' Adam: 0.044 -> 0.030 ms a step).
  auto known = keys_.find(p.unsafeGetTensorImpl());
  if (known == keys_.end()) known = keys_.emplace(p.unsafeGetTensorImpl(), compat::optimizer_state_key(p)).first;
  const auto& key = known->second;
  auto it = state_.find(key);
  if (it == state_.end()) {
    auto fresh = std::make_unique<torch::optim::AdamParamState>();
    fresh->step(0);
    fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
    it = state_.emplace(key, std::move(fresh)).first;
  }
  return static_cast<torch::optim::AdamParamState&>(*it->second);
}

const torch::optim::AdamOptions& FusedAdam::options_for(const torch::Tensor& p) const {
  for (const auto& group : param_groups_)
    for (const auto& q : group.params())
      if (q.is_same(p)) return static_cast<const torch::optim::AdamOptions&>(group.options());
  SASREC_FAIL(Check, "FusedAdam: the tensor is not one of the optimizer's parameters");
}

torch::Tensor FusedAdam::step(LossClosure closure) {
  for (const auto& group : param_groups_)
    for (const auto& p : group.params())
      if (p.grad().defined() && !fused_supported(p)) {
        // Tensor ops (CUDA): the decoupled decay first, then torch's Adam.
        torch::NoGradGuard no_grad;
        for (auto& g : param_groups_)
          for (auto& q : g.params())
            if (q.grad().defined() && decoupled_decay(q) > 0)
              q.mul_(1 - static_cast<const torch::optim::AdamOptions&>(g.options()).lr() * decoupled_decay(q));
        return Adam::step(std::move(closure));
      }
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    SASREC_CHECK(!o.amsgrad(), "FusedAdam does not implement amsgrad");
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      SASREC_CHECK(p.is_contiguous() && p.grad().is_contiguous(), "FusedAdam needs contiguous parameters");
      auto& state = state_for(p);
      state.step(state.step() + 1);
      const AdamCoefficients adam(o, state.step(), decoupled_decay(p));
      float* w = p.data_ptr<float>();
      const float* g = p.grad().data_ptr<float>();
      float* m = state.exp_avg().data_ptr<float>();
      float* v = state.exp_avg_sq().data_ptr<float>();
      parallel_pieces(p.numel(), kGrain, [&](int64_t begin, int64_t end) {
        adam.apply(w + begin, g + begin, m + begin, v + begin, end - begin);
      });
    }
  }
  return loss;
}

void FusedAdam::step_rows(const torch::Tensor& param, const torch::Tensor& ids, const torch::Tensor& grad_rows) {
  SASREC_CHECK(param.dim() == 2 && ids.dim() == 1 && grad_rows.dim() == 2 && grad_rows.size(0) == ids.size(0) &&
                   grad_rows.size(1) == param.size(1),
               "FusedAdam::step_rows: param [R,d], ids [U], grad_rows [U,d]");
  torch::NoGradGuard no_grad;
  const auto& o = options_for(param);
  SASREC_CHECK(!o.amsgrad(), "FusedAdam does not implement amsgrad");
  auto& state = state_for(param);
  state.step(state.step() + 1);
  if (!fused_supported(param)) {  // tensor ops on the rows (CUDA)
    const AdamCoefficients c(o, state.step());
    auto w = param.index_select(0, ids), m = state.exp_avg().index_select(0, ids);
    auto v = state.exp_avg_sq().index_select(0, ids);
    auto g = grad_rows + c.wd * w;
    m.mul_(c.b1).add_(g, c.c1);
    v.mul_(c.b2).addcmul_(g, g, c.c2);
    w.sub_(c.step_size * m / (v.sqrt() * c.inv_sqrt_bias2 + c.eps));
    param.index_copy_(0, ids, w);
    state.exp_avg().index_copy_(0, ids, m);
    state.exp_avg_sq().index_copy_(0, ids, v);
    return;
  }
  SASREC_CHECK(param.is_contiguous(), "FusedAdam needs contiguous parameters");
  const AdamCoefficients adam(o, state.step());
  const int64_t d = param.size(1), rows = param.size(0);
  auto grad = grad_rows.contiguous();
  auto index = ids.to(torch::kInt64).contiguous();
  const int64_t* id = index.data_ptr<int64_t>();
  const float* g = grad.data_ptr<float>();
  float* w = param.data_ptr<float>();
  float* m = state.exp_avg().data_ptr<float>();
  float* v = state.exp_avg_sq().data_ptr<float>();
  for (int64_t r = 0; r < index.size(0); ++r)
    SASREC_CHECK(id[r] >= 0 && id[r] < rows, "FusedAdam::step_rows: row ", id[r], " outside [0, ", rows, ")");
  parallel_pieces(index.size(0), std::max<int64_t>(1, kGrain / d), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      if (r + fused::kRowsAhead < end) {  // a large table's rows and moments are in memory, not cache
        const int64_t ahead = id[r + fused::kRowsAhead] * d;
        fused::prefetch<true>(w + ahead, d), fused::prefetch<true>(m + ahead, d), fused::prefetch<true>(v + ahead, d);
      }
      const int64_t at = id[r] * d;
      adam.apply(w + at, g + r * d, m + at, v + at, d);
    }
  });
}

void FusedAdam::step_dense_rows(const torch::Tensor& param, const torch::Tensor& ids, const torch::Tensor& grad_rows) {
  SASREC_CHECK(param.dim() == 2 && ids.dim() == 1 && grad_rows.dim() == 2 && grad_rows.size(0) == ids.size(0) &&
                   grad_rows.size(1) == param.size(1),
               "FusedAdam::step_dense_rows: param [R,d], ids [U], grad_rows [U,d]");
  if (!fused_supported(param)) {  // tensor ops (CUDA): every row, with the dense gradient
    step_rows(param, torch::arange(param.size(0), ids.options()),
              torch::zeros_like(param).index_copy_(0, ids, grad_rows));
    return;
  }
  torch::NoGradGuard no_grad;
  const auto& o = options_for(param);
  SASREC_CHECK(!o.amsgrad(), "FusedAdam does not implement amsgrad");
  SASREC_CHECK(param.is_contiguous(), "FusedAdam needs contiguous parameters");
  auto& state = state_for(param);
  state.step(state.step() + 1);
  const AdamCoefficients adam(o, state.step(), decoupled_decay(param));
  const int64_t d = param.size(1), rows = param.size(0), U = ids.size(0);
  auto grad = grad_rows.contiguous();
  auto index = ids.to(torch::kInt64).contiguous();
  const int64_t* id = index.data_ptr<int64_t>();
  for (int64_t r = 0; r < U; ++r)
    SASREC_CHECK(id[r] >= 0 && id[r] < rows && (r == 0 || id[r] > id[r - 1]),
                 "FusedAdam::step_dense_rows: ids must be sorted, unique and in [0, ", rows, ")");
  const float* g = grad.data_ptr<float>();
  float* w = param.data_ptr<float>();
  float* m = state.exp_avg().data_ptr<float>();
  float* v = state.exp_avg_sq().data_ptr<float>();
  parallel_pieces(rows, std::max<int64_t>(1, kGrain / d), [&](int64_t begin, int64_t end) {
    int64_t next = std::lower_bound(id, id + U, begin) - id;  // the first row with a gradient at or after begin
    int64_t r = begin;
    while (r < end) {
      const int64_t stop = next < U ? std::min(end, id[next]) : end;  // rows [r, stop) have no gradient
      adam.apply_zero(w + r * d, m + r * d, v + r * d, (stop - r) * d);
      r = stop;
      if (r < end) {  // row id[next]
        adam.apply(w + r * d, g + next * d, m + r * d, v + r * d, d);
        ++r, ++next;
      }
    }
  });
}

}  // namespace sasrec
