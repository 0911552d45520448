// optimizer.cpp: FusedAdam (see optimizer.h).
#include "sasrec/optimizer.h"

#include <ATen/Parallel.h>

#include <cmath>

#include "sasrec/error.h"

namespace sasrec {

torch::Tensor FusedAdam::step(LossClosure closure) {
  for (const auto& group : param_groups_)
    for (const auto& p : group.params())
      if (!p.device().is_cpu() || p.scalar_type() != torch::kFloat32) return Adam::step(std::move(closure));
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    SASREC_CHECK(!o.amsgrad(), "FusedAdam does not implement amsgrad");
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      SASREC_CHECK(p.is_contiguous() && p.grad().is_contiguous(), "FusedAdam needs contiguous parameters");
      // The state lives where torch::optim::Adam keeps it, so save/load are Adam's.
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto fresh = std::make_unique<torch::optim::AdamParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
        it = state_.emplace(key, std::move(fresh)).first;
      }
      auto& state = static_cast<torch::optim::AdamParamState&>(*it->second);
      state.step(state.step() + 1);
      const double bias1 = 1 - std::pow(beta1, static_cast<double>(state.step()));
      const double bias2 = 1 - std::pow(beta2, static_cast<double>(state.step()));
      const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
      const float c1 = static_cast<float>(1 - beta1), c2 = static_cast<float>(1 - beta2);
      const float wd = static_cast<float>(o.weight_decay()), eps = static_cast<float>(o.eps());
      const float step_size = static_cast<float>(o.lr() / bias1);
      const float inv_sqrt_bias2 = static_cast<float>(1 / std::sqrt(bias2));
      float* w = p.data_ptr<float>();
      const float* g = p.grad().data_ptr<float>();
      float* m = state.exp_avg().data_ptr<float>();
      float* v = state.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {  // branch-free: vectorizes (no errno from sqrt)
          const float grad = g[i] + wd * w[i];
          m[i] = m[i] * b1 + grad * c1;
          v[i] = v[i] * b2 + grad * grad * c2;
          w[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_bias2 + eps);
        }
      });
    }
  }
  return loss;
}

}  // namespace sasrec
