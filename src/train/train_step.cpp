// train_step.cpp: one optimizer step, as its phases (see trainer.h).
#include <chrono>
#include <cmath>

#include <ATen/record_function.h>

#include "sasrec/error.h"
#include "sasrec/log.h"
#include "sasrec/trainer.h"

namespace sasrec {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

}  // namespace

Trainer::StepOutcome Trainer::train_step(const Batch& batch, int64_t step, bool stop_requested) {
  StepOutcome out;
  // 1. The batch came from the sampler threads, packed and staged; the loss
  //    is divided by the GLOBAL target count, so a step's gradient does not
  //    depend on how sequences are spread over ranks.
  const int64_t global_targets = comm_.allreduce_sum(batch.targets);
  // 2-3. Forward and backward.
  const Pass pass = forward_backward(batch, step, global_targets);
  // 4. Reduce: every gradient summed over ranks, the flags with them.
  auto t = Clock::now();
  ReduceOutcome reduced;
  {
    RECORD_USER_SCOPE("phase::reduce");
    reduced = reducer_->reduce(pass.rows, !std::isfinite(pass.loss_sum), stop_requested);
  }
  times_.reduce += since(t);
  last_item_rows_ = reduced.item_rows;
  out.stop_requested = reduced.stop_ranks > 0;
  // 5. Non-finite loss or gradients: the reduced values are the same on every rank, and so the decision.
  if (const std::string bad = nonfinite(reduced, global_targets); !bad.empty()) {
    const std::string what = detail::cat("step ", step, " (epoch ", batch.epoch, ", batch ", batch.index, "): ", bad,
                                         " is not finite (NaN or Inf)");
    if (config_.train.on_nonfinite == OnNonfinite::Stop)
      SASREC_FAIL(Check, what,
                  "; stopped without updating the parameters (train.on_nonfinite: stop), the last "
                  "checkpoint is kept. Lower train.lr, check the data, or set train.on_nonfinite: skip");
    log_line(comm_.is_root(), what + "; step skipped (train.on_nonfinite: skip)");
    metrics_.write({{"event", "nonfinite"},
                    {"step", step},
                    {"epoch", batch.epoch},
                    {"batch", batch.index},
                    {"tensor", bad},
                    {"action", "skip"}});
    out.skipped = true;
    return out;
  }
  // 6. The optimizer step (none when no rank had a target).
  if (global_targets > 0) apply_update(step, reduced);
  out.loss_sum = pass.loss_sum;
  return out;
}

Trainer::Pass Trainer::forward_backward(const Batch& batch, int64_t step, int64_t global_targets) {
  Pass pass;
  for (auto& p : params_) p.value().mutable_grad().reset();  // backward allocates them: no zero fill
  if (batch.targets == 0) {  // a rank without users this step still joins the exchanges
    if (shard_) pass.rows = shard_->fetch(model_->item_weight(), {});
    return pass;
  }
  // The sampler threads packed and staged the batch (packing.h); one copy
  // to the device, asynchronous from pinned memory on CUDA.
  const StepInputs host =
      batch.inputs.staging.defined() ? batch.inputs : stage_inputs(batch, config_.model.maxlen, false);
  const double scale = 1.0 / static_cast<double>(std::max<int64_t>(1, global_targets));
  auto t = Clock::now();
  if (graph_) {
    // runtime.cuda_graphs: forward, loss and backward replayed as one graph (step_graph.h).
    RECORD_USER_SCOPE("phase::forward");
    const PaddedInputs padded =
        pad_inputs(host, bucket_for(graph_buckets_, batch.targets), graph_batch_, config_.model.maxlen);
    pass.loss_sum = graph_->run(padded, scale).item<double>();
    times_.forward += since(t);
    return pass;
  }
  torch::Tensor sum;
  {
    RECORD_USER_SCOPE("phase::forward");
    StepInputs in = host.to(device_);
    SASREC_CHECK(in.packing.items.size(0) == batch.targets, "batch ", batch.index, ": ", batch.targets, " targets but ",
                 in.packing.items.size(0), " input items");
    const SampledTerms terms = objective_->terms(in);  // by GLOBAL item id, before the remap below
    // The sampled losses read M only at the batch's items: through a copy
    // of those rows, so the gradient is [U,D], not [I+1,D] (item_rows.h).
    const bool rows = reducer_ && objective_->gathers_item_rows();
    const std::vector<torch::Tensor*> ids{&in.packing.items, &in.pos, &in.neg, &in.shared};
    if (shard_)
      pass.rows = shard_->fetch(model_->item_weight(), ids);  // from their owners (item_shard.h)
    else if (rows && fused_)
      pass.rows.ids = unique_and_remap(ids, model_->item_weight().size(0));  // the fused step reads M[ids] in place
    else if (rows)
      pass.rows = gather_item_rows(model_->item_weight(), ids);
    const torch::Tensor& table = pass.rows.table.defined() ? pass.rows.table : model_->item_weight();
    if (fused_) {
      // model.kernels fused: forward, loss and backward in one call, which sets every gradient
      // (fused_model.h); the hook sees its loss sum, the gradients already computed.
      const torch::Tensor in_place = rows && !shard_ ? pass.rows.ids : torch::Tensor();
      const auto r =
          fused_->forward_backward(in.packing, in.users, table, in.pos, in.neg, in.shared, terms, scale, in_place);
      pass.rows.grad = r.rows_grad;
      pass.loss_sum = r.loss_sum;
      if (hooks_)
        pass.loss_sum =
            hooks_->after_forward(comm_.rank(), step, torch::tensor(r.loss_sum, torch::kFloat64)).item<double>();
      times_.forward += since(t) - r.backward_seconds;
      times_.backward += r.backward_seconds;
      return pass;
    }
    auto features = model_->forward_packed(in.packing, in.users, pass.rows.table);  // [N,D]
    sum = objective_->loss_sum(features, table, in, terms);
    if (hooks_) sum = hooks_->after_forward(comm_.rank(), step, sum);
  }
  times_.forward += since(t);
  t = Clock::now();
  {
    RECORD_USER_SCOPE("phase::backward");
    (sum / static_cast<double>(std::max<int64_t>(1, global_targets))).backward();
    pass.loss_sum = sum.item<double>();
  }
  times_.backward += since(t);
  return pass;
}

std::string Trainer::nonfinite(const ReduceOutcome& reduced, int64_t global_targets) const {
  if (reduced.loss_bad_ranks > 0) return "the loss";
  if (global_targets == 0) return "";
  if (reduced.item_bad_ranks > 0) return "the gradient of 'item.weight'";  // sharded: its owners found it
  if (!shard_ && reduced.item_rows.values.defined() && !all_finite(reduced.item_rows.values))
    return "the gradient of 'item.weight'";
  for (const auto& p : params_) {
    const auto& g = p.value().grad();
    if (g.defined() && !all_finite(g)) return "the gradient of '" + p.key() + "'";
  }
  return "";
}

void Trainer::apply_update(int64_t step, const ReduceOutcome& reduced) {
  const auto t = Clock::now();
  RECORD_USER_SCOPE("phase::step");
  lr_ = scheduled_lr(config_.train, step, schedule_steps_);
  optimizer_->set_lr(lr_);
  optimizer_->step();  // the item table too when its gradient is dense (else it came as rows: below)
  // Rows by index into model_->item_weight(): global ids, or a sharded table's local ones.
  if (lazy_item_rows_)
    optimizer_->step_rows(model_->item_weight(), reduced.item_rows.ids, reduced.item_rows.values);
  else if (reduced.item_rows.ids.defined() && !model_->item_weight().grad().defined())  // rows only: dense Adam
    optimizer_->step_dense_rows(model_->item_weight(), reduced.item_rows.ids, reduced.item_rows.values);
  model_->zero_padding();
  times_.step += since(t);
}

torch::Tensor Trainer::item_gradient() const {
  const torch::Tensor& table = model_->item_weight();
  if (table.grad().defined() || !last_item_rows_.ids.defined()) return table.grad();
  return torch::zeros_like(table).index_copy_(0, last_item_rows_.ids, last_item_rows_.values);
}

// CPU float32: one pass in which x * 0 turns NaN and +-Inf into NaN and
// everything else into 0, on eight independent sums (so the loop is not one
// long dependency chain). Other tensors: libtorch.
bool all_finite(const torch::Tensor& t) {
  if (!t.is_cpu() || t.scalar_type() != torch::kFloat32 || !t.is_contiguous())
    return torch::isfinite(t).all().item<bool>();
  const float* x = t.data_ptr<float>();
  const int64_t n = t.numel();
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += x[i + l] * 0.0f;
  for (; i < n; ++i) acc[0] += x[i] * 0.0f;
  float sum = 0;
  for (float a : acc) sum += a;
  return sum == 0.0f;
}

}  // namespace sasrec
