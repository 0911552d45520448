// trainer.cpp: the training loop (see trainer.h for the phases).
#include "sasrec/trainer.h"

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <limits>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <thread>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "sasrec/error.h"
#include "sasrec/log.h"
#include "sasrec/loss.h"
#include "sasrec/optimizer.h"
#include "sasrec/progress.h"
#include "sasrec/rng.h"
#include "sasrec/step_guard.h"

namespace sasrec {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

nlohmann::json eval_event(int64_t epoch, const EvalResult& r) {
  nlohmann::json j{{"event", "eval"}, {"epoch", epoch}, {"split", r.split}, {"protocol", r.protocol},
                   {"users", r.metrics.count()}, {"seconds", r.seconds}, {"users_per_s", r.users_per_s}};
  for (const auto& [k, v] : r.metrics.means()) j[k] = v;
  return j;
}

// The memory plan every rank makes alike (memory_plan.h): the largest
// shard's interactions; a budget of runtime.memory_mb, else what the device
// has, on CPU split among the ranks of a machine (local ranks 0..L-1, the
// same L on every machine assumed); the smallest over ranks counts.
std::pair<MemoryPlan, MemoryBudget> plan_rank_memory(const Config& config, const SplitData& data, Communicator& comm,
                                                     torch::Device device) {
  MemoryBudget budget = memory_budget(config, device);
  const bool shared = config.runtime.memory_mb == 0 && device.is_cpu();
  auto mine = torch::tensor({data.num_interactions(), int64_t{comm.local_rank()}, budget.bytes}, torch::kInt64);
  auto all = comm.allgather(mine.view({1, 3})).view({-1, 3});  // [world,3]
  const int64_t largest_shard = all.select(1, 0).max().item<int64_t>();
  const int64_t per_machine = all.select(1, 1).max().item<int64_t>() + 1;
  budget.bytes = all.select(1, 2).min().item<int64_t>();
  if (budget.bytes > 0 && shared && per_machine > 1) {
    budget.bytes /= per_machine;
    budget.source += detail::cat(" / ", per_machine, " ranks on the machine");
  }
  return {plan_memory(config, data.num_items(), data.num_users_total(), largest_shard, comm.world_size(), device),
          budget};
}

// NDCG@10 of the first protocol, the model-selection figure (MRR where 10 is not among eval.ks).
double selection_score(const std::vector<EvalResult>& valid) {
  if (valid.empty()) return -1;
  auto m = valid.front().metrics.means();
  auto it = m.find("ndcg@10");
  return it != m.end() ? it->second : m.at("mrr");
}

}  // namespace

torch::Device resolve_device(const std::string& setting, int local_rank) {
  const bool cuda = torch::cuda::is_available();
  if (setting == "cuda" && !cuda)
    SASREC_FAIL(Config, "runtime.device is cuda but this build or machine has no CUDA device; use auto or cpu");
  if (setting == "cpu" || !cuda) return torch::Device(torch::kCPU);
  const int n = static_cast<int>(torch::cuda::device_count());
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % n));
}

Trainer::Trainer(Config config, Communicator& comm)
    : config_(std::move(config)), comm_(comm), device_(resolve_device(config_.runtime.device, comm.local_rank())) {
  const int threads = config_.train.threads > 0 ? config_.train.threads
                                                : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
  torch::set_num_threads(threads);
  torch::manual_seed(config_.train.seed);  // initial parameters: rank 0's are broadcast below

  data_ = std::make_unique<SplitData>(load_shard(config_.data.path, comm_.rank(), comm_.world_size()));
  global_trainable_ = comm_.allreduce_sum(static_cast<int64_t>(data_->trainable_users().size()));
  if (global_trainable_ == 0)
    SASREC_FAIL(Input, config_.data.path, ": no user has 2 or more training interactions; nothing to train on");
  const int64_t per_step = static_cast<int64_t>(config_.train.batch_size) * comm_.world_size();
  steps_per_epoch_ = (global_trainable_ + per_step - 1) / per_step;

  // Before the model exists: a config that cannot fit stops here, on every rank alike.
  std::tie(memory_plan_, memory_budget_) = plan_rank_memory(config_, *data_, comm_, device_);
  for (const auto& line : format_memory_plan(memory_plan_, memory_budget_)) log_line(comm_.is_root(), line);
  check_memory_plan(memory_plan_, memory_budget_);

  model_ = SASRec(SASRecOptions::from(config_.model, data_->num_items(), data_->num_users_total()));
  model_->to(device_);
  broadcast_parameters();

  // Adam; the item table carries the L2 penalty l2_emb * ||M||^2 as weight decay 2 * l2_emb.
  std::vector<torch::Tensor> table{model_->item_weight()}, rest;
  for (auto& p : model_->parameters())
    if (!p.is_same(model_->item_weight())) rest.push_back(p);
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::AdamOptions>(
        torch::optim::AdamOptions(config_.train.lr).betas({config_.train.beta1, config_.train.beta2}).weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(table, options(2 * config_.train.l2_emb));
  groups.emplace_back(rest, options(0));
  optimizer_ = std::make_unique<FusedAdam>(groups, torch::optim::AdamOptions(config_.train.lr));
  // Decoupled weight decay on the dense matrices (attention, FFN), not on
  // biases, LayerNorm or the embedding tables (item, position, user).
  if (config_.train.weight_decay > 0) {
    std::vector<torch::Tensor> dense;
    for (const auto& p : model_->named_parameters())
      if (p.value().dim() == 2 && p.key() != "item.weight" && p.key() != "position.weight" &&
          p.key() != "user.weight")
        dense.push_back(p.value());
    optimizer_->set_decoupled_weight_decay(dense, config_.train.weight_decay);
  }
  schedule_steps_ = config_.train.epochs * steps_per_epoch_;
  if (config_.train.max_steps > 0) schedule_steps_ = std::min(schedule_steps_, config_.train.max_steps);
  lr_ = config_.train.lr;
  item_rows_ = config_.train.loss != LossKind::Ce;
  lazy_item_adam_ = config_.train.item_optimizer == "lazy_adam";  // validate(): never with ce

  // Sampled losses: the popularity proposal counts every rank's training
  // interactions (each rank holds a shard of the users); gbce's beta.
  if (config_.train.proposal == "popularity") {
    std::vector<int64_t> counts = data_->train_item_counts();  // [I+1]
    auto all = torch::from_blob(counts.data(), {static_cast<int64_t>(counts.size())}, torch::kInt64).clone();
    comm_.allreduce_sum(all);
    item_counts_.assign(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel());
  }
  if (config_.train.loss == LossKind::Gbce)
    gbce_beta_ = gbce_beta(config_.train.negatives, data_->num_items(), config_.train.gbce_t);

  evaluator_ = std::make_unique<Evaluator>(*data_, config_.eval, config_.train.seed, comm_);
  for (const auto& p : model_->parameters()) dense_bucket_bytes_ += p.numel() * p.element_size();
  dense_bucket_bytes_ += 2 * sizeof(float);  // the bucket's two flags
  // Fault injection for the tests of failure handling (fault.h).
  fault_ = FaultPlan::parse(std::getenv("SASREC_INJECT_FAULT"));
}

void Trainer::broadcast_parameters() {
  if (comm_.world_size() == 1) return;
  torch::NoGradGuard no_grad;
  for (auto& p : model_->parameters()) {
    auto t = p.detach().contiguous();
    comm_.broadcast(t, 0);
    p.copy_(t);
  }
}

bool Trainer::exchange_sparse(int64_t total_rows) const {
  const auto& mode = config_.train.exchange;
  if (mode != "auto") return mode == "sparse";
  const int world = comm_.world_size();
  const auto& table = model_->item_weight();
  const int64_t row_bytes = sizeof(int64_t) + table.size(1) * table.element_size();
  return allgather_wire_bytes(total_rows * row_bytes, world) <
         allreduce_wire_bytes(table.numel() * table.element_size(), world);
}

void Trainer::set_dense_item_grad(const RowGradient& g) {
  const auto& table = model_->item_weight();
  table.mutable_grad() = torch::zeros_like(table).index_copy_(0, g.ids, g.values);
}

std::pair<double, double> Trainer::reduce_gradients(bool loss_bad, bool stop_requested, const ItemRows& rows) {
  const int world = comm_.world_size();
  const auto& table = model_->item_weight();
  // This rank's item rows (none on a rank without targets this step).
  RowGradient mine;
  if (item_rows_) {
    mine.ids = rows.ids.defined() ? rows.ids : torch::empty({0}, table.options().dtype(torch::kInt64));
    mine.values = rows.ids.defined() ? rows.table.grad() : torch::empty({0, table.size(1)}, table.options());
  }
  if (world == 1) {
    if (item_rows_) {
      if (lazy_item_adam_) item_grad_ = mine;
      else set_dense_item_grad(mine);
    }
    return {loss_bad ? 1.0 : 0.0, stop_requested ? 1.0 : 0.0};
  }
  bool sparse = false;
  if (item_rows_) {
    const int64_t total_rows = comm_.allreduce_sum(mine.ids.size(0));
    wire_bytes_ += allreduce_wire_bytes(sizeof(int64_t), world);
    exchanged_rows_ += total_rows;
    sparse = exchange_sparse(total_rows);
    if (sparse) {
      // Sparse: every rank's (ids, rows), gathered and summed in rank order.
      item_grad_ = allgather_rows(comm_, mine.ids, mine.values);
      wire_bytes_ += allgather_wire_bytes(total_rows * (sizeof(int64_t) + table.size(1) * table.element_size()), world);
      if (!lazy_item_adam_) set_dense_item_grad(item_grad_);
    } else {
      set_dense_item_grad(mine);  // all-reduced in the bucket below
    }
  }
  ++(sparse ? sparse_steps_ : dense_steps_);
  // One flat bucket: a single all-reduce per step, not one per tensor; two
  // flags ride along so that every rank takes the same decisions. Sparse
  // steps leave the item table out of it.
  std::vector<torch::Tensor> grads;
  std::vector<torch::Tensor> bucketed;
  for (auto& p : model_->parameters()) {
    if (sparse && p.is_same(table)) continue;
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    grads.push_back(p.grad().view(-1));
    bucketed.push_back(p);
  }
  const auto options = grads.front().options();
  grads.push_back(torch::tensor({loss_bad ? 1.0f : 0.0f, stop_requested ? 1.0f : 0.0f}).to(options.device()));
  auto flat = torch::cat(grads);
  comm_.allreduce_sum(flat);
  wire_bytes_ += allreduce_wire_bytes(flat.numel() * flat.element_size(), world);
  int64_t offset = 0;
  for (auto& p : bucketed) {
    const int64_t n = p.numel();
    p.mutable_grad().view(-1).copy_(flat.slice(0, offset, offset + n));
    offset += n;
  }
  if (item_rows_ && !sparse && lazy_item_adam_) {
    // Dense exchange, lazy Adam: the rows any rank touched (their ids are
    // 8 bytes a row) take their summed gradient; M's dense one goes away.
    auto ids = comm_.allgather(mine.ids.contiguous());
    wire_bytes_ += allgather_wire_bytes(ids.numel() * ids.element_size(), world);
    item_grad_.ids = std::get<0>(at::_unique(ids, /*sorted=*/true));
    item_grad_.values = table.grad().index_select(0, item_grad_.ids);
    table.mutable_grad().reset();
  }
  auto flags = flat.slice(0, offset, offset + 2).to(torch::kCPU, torch::kFloat64);
  return {flags[0].item<double>(), flags[1].item<double>()};
}

std::string Trainer::nonfinite_gradient() const {
  if (lazy_item_adam_ && item_grad_.values.defined() && !all_finite(item_grad_.values)) return "item.weight";
  for (const auto& p : model_->named_parameters()) {
    const auto& g = p.value().grad();
    if (g.defined() && !all_finite(g)) return p.key();
  }
  return "";
}

Trainer::StepOutcome Trainer::train_step(const Batch& batch, int64_t step, bool stop_requested) {
  StepOutcome out;
  auto t = Clock::now();
  const int64_t global_targets = comm_.allreduce_sum(batch.targets);
  for (auto& p : model_->parameters()) p.mutable_grad().reset();  // backward allocates them: no zero fill
  item_grad_ = RowGradient{};
  ItemRows rows;  // the item rows of a sampled loss's step
  double loss_sum_value = 0;
  if (batch.targets > 0) {
    torch::Tensor sum;
    {
      RECORD_USER_SCOPE("phase::forward");
      // Only items go through the network, packed (model.h); the targets are
      // at the same places as the inputs, so the target rows are the same rows.
      const Packing packing = pack_sequences(batch.seq, config_.model.maxlen);
      SASREC_CHECK(packing.items.size(0) == batch.targets, "batch ", batch.index, ": ", batch.targets,
                   " targets but ", packing.items.size(0), " input items");
      auto on_device = [&](const torch::Tensor& x) { return x.to(device_, /*non_blocking=*/true); };
      Packing packed = packing;
      for (auto* x : {&packed.items, &packed.positions, &packed.index, &packed.sequence}) *x = on_device(*x);
      auto pick = [&](const torch::Tensor& x) {  // [B,T] -> the [N] packed rows; [B,T,k] -> [N,k]
        if (!x.defined()) return x;
        auto flat = x.dim() == 3 ? x.reshape({-1, x.size(2)}) : x.reshape({-1});
        return on_device(flat.index_select(0, packing.index));
      };
      auto pos = pick(batch.pos), neg = pick(batch.neg);
      auto shared = batch.shared.defined() ? on_device(batch.shared) : batch.shared;
      // log-Q of the popularity proposal, looked up by GLOBAL item id (before the remap below).
      const SampledTerms terms{log_kq_.defined() ? log_kq_.index_select(0, pos) : log_kq_,
                               log_kq_.defined() ? on_device(batch.shared_log_q) : log_kq_, gbce_beta_};
      // The sampled losses read M only at the batch's items: through a copy
      // of those rows, so the gradient is [U,D], not [I+1,D] (item_rows.h).
      if (item_rows_) rows = gather_item_rows(model_->item_weight(), {&packed.items, &pos, &neg, &shared});
      auto features = model_->forward_packed(packed, on_device(batch.users), rows.table);  // [N,D]
      sum = loss_sum_rows(config_.train.loss, features, item_rows_ ? rows.table : model_->item_weight(), pos, neg,
                          shared, terms);
      if (fault_.due(FaultKind::Nan, comm_.rank(), step)) sum = sum * std::numeric_limits<double>::quiet_NaN();
    }
    t_forward_ += since(t);
    t = Clock::now();
    {
      RECORD_USER_SCOPE("phase::backward");
      (sum / static_cast<double>(std::max<int64_t>(1, global_targets))).backward();
      loss_sum_value = sum.item<double>();
    }
    t_backward_ += since(t);
  }
  t = Clock::now();
  std::pair<double, double> flags;
  {
    RECORD_USER_SCOPE("phase::reduce");
    flags = reduce_gradients(!std::isfinite(loss_sum_value), stop_requested, rows);
  }
  t_reduce_ += since(t);
  out.stop_requested = flags.second > 0;
  // Non-finite loss or gradients: the reduced gradients and flags are the same on every rank.
  std::string bad = flags.first > 0 ? std::string("the loss") : std::string();
  if (bad.empty() && global_targets > 0) {
    const std::string name = nonfinite_gradient();
    if (!name.empty()) bad = "the gradient of '" + name + "'";
  }
  if (!bad.empty()) {
    const std::string what = detail::cat("step ", step, " (epoch ", batch.epoch, ", batch ", batch.index, "): ", bad,
                                         " is not finite (NaN or Inf)");
    if (config_.train.on_nonfinite == "stop")
      SASREC_FAIL(Check, what, "; stopped without updating the parameters (train.on_nonfinite: stop), the last "
                  "checkpoint is kept. Lower train.lr, check the data, or set train.on_nonfinite: skip");
    log_line(comm_.is_root(), what + "; step skipped (train.on_nonfinite: skip)");
    metrics_.write({{"event", "nonfinite"}, {"step", step}, {"epoch", batch.epoch}, {"batch", batch.index},
                    {"tensor", bad}, {"action", "skip"}});
    out.skipped = true;
    return out;
  }
  t = Clock::now();
  if (global_targets > 0) {
    RECORD_USER_SCOPE("phase::step");
    lr_ = scheduled_lr(config_.train, step, schedule_steps_);
    optimizer_->set_lr(lr_);
    optimizer_->step();  // the item table too unless lazy (its dense gradient is then undefined)
    if (lazy_item_adam_) optimizer_->step_rows(model_->item_weight(), item_grad_.ids, item_grad_.values);
    model_->zero_padding();
  }
  t_step_ += since(t);
  out.loss_sum = loss_sum_value;
  return out;
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

std::vector<double> parameter_checksum(SASRec& model) {
  torch::NoGradGuard no_grad;
  double sum = 0, weighted = 0;
  for (const auto& p : model->parameters()) {
    auto flat = p.detach().reshape(-1).to(torch::kFloat64).cpu();
    sum += flat.sum().item<double>();
    weighted += (flat * torch::arange(1, flat.numel() + 1, flat.options())).sum().item<double>();
  }
  return {sum, weighted};
}

void Trainer::check_replicas(int64_t step) {
  const auto mine = parameter_checksum(model_);
  auto all = comm_.allgather(torch::tensor(mine, torch::kFloat64).view({1, 2})).contiguous();  // [world,2]
  for (int r = 1; r < comm_.world_size(); ++r)
    if (all[r][0].item<double>() != all[0][0].item<double>() || all[r][1].item<double>() != all[0][1].item<double>())
      SASREC_FAIL(Check, "step ", step, ": the parameters of rank ", r, " differ from rank 0's (checksum ",
                  all[r][0].item<double>(), " vs ", all[0][0].item<double>(),
                  "): the replicas diverged. This is a bug; please report it with the config");
}

std::string Trainer::resume_path() const {
  const auto& resume = config_.checkpoint.resume;
  if (resume == "none") return "";
  if (resume != "auto") return resume;
  if (!std::filesystem::exists(config_.checkpoint.dir)) return "";
  // The newest intact checkpoint: a corrupt one (checksum, truncation) is
  // passed over, saying so, for the one before it.
  const auto all = CheckpointDir(config_.checkpoint.dir, config_.checkpoint.keep).list();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    const std::string problem = checkpoint_problem(*it);
    if (problem.empty()) return *it;
    log_line(comm_.is_root(), detail::cat("checkpoint.resume auto: skipping ", *it, " (", problem, "); ",
                                          it + 1 != all.rend() ? "falling back to the previous one" : "no older one"));
  }
  if (!all.empty())
    SASREC_FAIL(Io, "checkpoint.resume is auto but no checkpoint in ", config_.checkpoint.dir,
                " is intact; move the folder away to start afresh, or set checkpoint.resume to a file");
  return "";
}

void Trainer::inject_step_fault(int64_t step) {
  if (fault_.rank != comm_.rank() || fault_.step != step) return;
  switch (fault_.kind) {
    case FaultKind::Throw: SASREC_FAIL(Check, "injected fault at step ", step, " (SASREC_INJECT_FAULT)");
    case FaultKind::Exit: ::_exit(kExitFailure);  // a rank dying without a word
    case FaultKind::Kill: std::raise(SIGKILL); break;
    case FaultKind::Sigterm: std::raise(SIGTERM); break;
    default: break;  // nan and the checkpoint kinds act elsewhere
  }
}

void Trainer::log_eval(int64_t epoch, const std::vector<EvalResult>& results) {
  for (const auto& r : results) {
    metrics_.write(eval_event(epoch, r));
    // The cutoff nearest to 10 on the terminal; the metrics file has them all.
    const int k = nearest_cutoff(config_.eval.ks);
    auto m = r.metrics.means();
    const std::string at = "@" + std::to_string(k);
    log_line(comm_.is_root(), detail::cat("eval ", r.split, "/", r.protocol, " epoch ", epoch, ": HR", at, " ",
                                          m["hr" + at], "  NDCG", at, " ", m["ndcg" + at], "  MRR ", m["mrr"], "  (",
                                          r.metrics.count(), " users, ", format_duration(r.seconds), ", ",
                                          static_cast<int64_t>(r.users_per_s), " users/s)"));
  }
}

std::vector<EvalResult> Trainer::evaluate(const std::string& split) { return evaluator_->evaluate(model_, split); }

void Trainer::load_model(const std::string& checkpoint) { load_checkpoint(checkpoint, model_, nullptr); }

TrainSummary Trainer::fit() {
  const bool root = comm_.is_root();
  const StepGuard guard;  // SIGTERM / SIGINT: finish the step, checkpoint, return
  TrainSummary summary;
  TrainState state;
  state.config_yaml = to_yaml(config_);

  const std::string resume = resume_path();
  if (!resume.empty()) {
    TrainState loaded = load_checkpoint(resume, model_, optimizer_.get());
    state.epoch = loaded.epoch;
    state.step = loaded.step;
    state.batch = loaded.batch;
    state.dropout_calls = loaded.dropout_calls;
    SASREC_CHECK(state.batch < steps_per_epoch_, resume, ": resumes at batch ", state.batch, " of an epoch of ",
                 steps_per_epoch_, " steps; it was written with another train.batch_size or rank count");
    log_line(root, detail::cat("resumed from ", resume, " after epoch ", state.epoch, ", step ", state.step,
                               state.batch ? detail::cat(" (batch ", state.batch, " of epoch ", state.epoch + 1, ")")
                                           : std::string()));
  }
  if (root) metrics_ = MetricsWriter(config_.output.metrics, /*append=*/!resume.empty());
  std::unique_ptr<CheckpointDir> checkpoints;
  if (!config_.checkpoint.dir.empty() && root) {
    checkpoints = std::make_unique<CheckpointDir>(config_.checkpoint.dir, config_.checkpoint.keep);
    if (const int stale = checkpoints->remove_stale_temporaries())
      log_line(root, detail::cat("removed ", stale, " unfinished checkpoint file(s) of a killed run from ",
                                 config_.checkpoint.dir));
  }
  // Rank 0 writes; the checkpoint kinds of SASREC_INJECT_FAULT apply to its writes.
  auto save = [&](const TrainState& s) {
    FaultKind inject = FaultKind::None;
    for (FaultKind k : {FaultKind::CkptKill, FaultKind::CkptEnospc})
      if (fault_.due(k, comm_.rank(), s.step)) inject = k;
    summary.checkpoint = checkpoints->save(model_, optimizer_.get(), s, inject);
    metrics_.write({{"event", "checkpoint"}, {"epoch", s.epoch}, {"step", s.step}, {"path", summary.checkpoint}});
  };

  int64_t params = 0;
  for (const auto& p : model_->parameters()) params += p.numel();
  metrics_.write({{"event", "start"}, {"world_size", comm_.world_size()}, {"comm", comm_.name()},
                  {"device", device_.str()}, {"threads", torch::get_num_threads()}, {"parameters", params},
                  {"users", data_->num_users_total()}, {"items", data_->num_items()},
                  {"trainable_users", global_trainable_}, {"steps_per_epoch", steps_per_epoch_},
                  {"resumed_from", resume}, {"config", state.config_yaml}});
  metrics_.write(memory_plan_event(memory_plan_, memory_budget_));
  log_line(root, detail::cat("sasrec_ddp: ", data_->num_users_total(), " users, ", data_->num_items(), " items, ",
                             params, " parameters, ", comm_.world_size(), " rank(s) on ", device_.str(), ", ",
                             torch::get_num_threads(), " thread(s) each, ", steps_per_epoch_, " steps/epoch, loss ",
                             loss_name(config_.train.loss)));

  const int64_t max_steps = config_.train.max_steps;
  SamplerOptions so;
  so.batch_size = config_.train.batch_size;
  so.maxlen = config_.model.maxlen;
  so.per_position_negatives = config_.train.loss == LossKind::Bce;  // neg [B,T]
  so.negatives_per_target = config_.train.loss == LossKind::Gbce ? config_.train.negatives : 0;  // neg [B,T,k]
  so.shared_negatives = config_.train.loss == LossKind::SampledSoftmax ? config_.train.negatives : 0;
  so.proposal_counts = item_counts_;  // empty: uniform
  so.seed = config_.train.seed;
  so.rank = comm_.rank();
  so.threads = config_.data.sampler_threads;
  so.prefetch = config_.data.prefetch;
  so.steps_per_epoch = steps_per_epoch_;
  so.length_buckets = config_.data.length_buckets;
  Sampler sampler(*data_, so);
  // The targets' log(K q) come from the table the sampler draws with (popularity only).
  if (sampler.proposal_log_q().defined()) log_kq_ = sampler.proposal_log_q().to(device_);

  // Rank 0's live line or plain lines (progress.h); sequences/s counts this
  // rank's sequences times the rank count, so it needs no collective.
  Progress progress(root ? resolve_progress_mode(config_.output.progress, ::isatty(STDOUT_FILENO) == 1)
                         : ProgressMode::Off,
                    config_.output.log_every);
  const int64_t run_steps = std::min<int64_t>(config_.train.epochs * steps_per_epoch_,
                                              max_steps > 0 ? max_steps : INT64_MAX);
  constexpr int64_t kProfileFirst = 11, kProfileLast = 60;
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  const auto start = Clock::now();
  double best_score = -1;
  int evals_without_gain = 0;  // eval.patience
  bool stop = max_steps > 0 && state.step >= max_steps;
  for (int64_t epoch = state.epoch + 1; epoch <= config_.train.epochs && !stop; ++epoch) {
    // Dropout's stream is a function of (seed, rank, epoch) and its call
    // count, batches of (seed, rank, epoch, batch): a resumed run, even one
    // resumed inside an epoch, draws the same masks and batches.
    const int64_t first = state.batch;
    const uint64_t dropout_key =
        mix_seed({config_.train.seed, static_cast<uint64_t>(comm_.rank()), static_cast<uint64_t>(epoch), 0xd0ull});
    model_->reseed_dropout(dropout_key, first > 0 ? state.dropout_calls : 0);
    torch::manual_seed(dropout_key);  // libtorch's own dropout on CUDA (a resume inside an epoch is exact on CPU only)
    model_->train();
    sampler.start_epoch(epoch, first);
    state.batch = 0;
    t_sample_ = t_forward_ = t_backward_ = t_reduce_ = t_step_ = 0;
    sparse_steps_ = dense_steps_ = wire_bytes_ = exchanged_rows_ = 0;
    const auto epoch_start = Clock::now();
    double loss_sum_total = 0;
    int64_t targets = 0, sequences = 0, steps = 0;
    int stop_signal = 0;  // the step guard's request, once every rank knows of it
    for (int64_t s = first; s < steps_per_epoch_; ++s) {
      // output.profile: a Chrome trace of steps kProfileFirst..kProfileLast, op by op.
      if (root && !config_.output.profile.empty() && state.step + 1 == kProfileFirst)
        profile = std::make_unique<torch::autograd::profiler::RecordProfile>(config_.output.profile);
      auto t = Clock::now();
      Batch batch;
      {
        RECORD_USER_SCOPE("phase::sample");
        batch = sampler.next();
      }
      t_sample_ += since(t);
      const StepOutcome outcome = train_step(batch, state.step + 1, guard.requested() != 0);
      if (outcome.skipped) ++summary.skipped_steps;
      loss_sum_total += outcome.loss_sum;
      if (profile && state.step + 1 == kProfileLast) {
        profile.reset();  // writes the trace
        progress.clear();
        log_line(root, "wrote the profile of steps " + std::to_string(kProfileFirst) + "-" +
                           std::to_string(kProfileLast) + " to " + config_.output.profile);
      }
      if (!outcome.skipped) targets += batch.targets;
      sequences += batch.seq.size(0);
      ++steps;
      ++state.step;
      if (config_.runtime.check_replicas > 0 && state.step % config_.runtime.check_replicas == 0)
        check_replicas(state.step);
      inject_step_fault(state.step);
      if (root) {
        const double elapsed = since(epoch_start);
        ProgressState ps;
        ps.epoch = epoch, ps.epochs = config_.train.epochs, ps.step = s + 1, ps.steps = steps_per_epoch_;
        ps.loss = loss_sum_total / std::max<int64_t>(1, targets);
        ps.seqs_per_s = static_cast<double>(sequences * comm_.world_size()) / std::max(1e-9, elapsed);
        progress.update(ps, elapsed, std::max<int64_t>(0, run_steps - state.step));
      }
      // One rank: the guard is read here. Several: its flag travelled in this
      // step's gradient bucket, so every rank stops after the same step.
      const bool stop_now = comm_.world_size() == 1 ? guard.requested() != 0 : outcome.stop_requested;
      if (stop_now) {
        stop_signal = guard.requested() ? guard.requested() : SIGTERM;
        state.batch = s + 1;
        break;
      }
      if (max_steps > 0 && state.step >= max_steps) {
        stop = true;
        break;
      }
    }
    if (stop_signal) {  // interrupted: checkpoint where we are and return
      progress.clear();
      if (state.batch == steps_per_epoch_) state.epoch = epoch, state.batch = 0;
      state.dropout_calls = model_->dropout_calls();
      summary.interrupted_by = stop_signal;
      summary.epochs = state.epoch;
      summary.steps = state.step;
      if (checkpoints) save(state);
      metrics_.write({{"event", "interrupted"}, {"signal", StepGuard::signal_name(stop_signal)},
                      {"step", state.step}, {"checkpoint", summary.checkpoint}});
      log_line(root, detail::cat("interrupted by ", StepGuard::signal_name(stop_signal), " after step ", state.step,
                                 summary.checkpoint.empty() ? "; no checkpoint.dir, nothing saved"
                                                            : "; checkpoint " + summary.checkpoint +
                                                                  " written, resume with checkpoint.resume: auto"));
      comm_.barrier();  // no rank leaves (and ends the job) before rank 0 has written
      summary.seconds = since(start);
      return summary;
    }
    const double seconds = since(epoch_start);
    progress.clear();
    std::vector<double> sums{loss_sum_total, static_cast<double>(targets), static_cast<double>(sequences)};
    comm_.allreduce_sum(sums);
    if (!std::isfinite(sums[0]))
      SASREC_FAIL(Check, "epoch ", epoch, ": the loss is not finite (", sums[0],
                  "); lower train.lr or check the data");
    const double loss = sums[0] / std::max(1.0, sums[1]);
    const double seq_per_s = sums[2] / std::max(1e-9, seconds);
    state.epoch = epoch;
    summary.epochs = epoch;
    // The exchange, bytes one rank moved per step (ring algorithms, item_rows.h).
    const nlohmann::json exchange{{"sparse_steps", sparse_steps_}, {"dense_steps", dense_steps_},
                                  {"bytes_per_step", wire_bytes_ / std::max<int64_t>(1, steps)},
                                  {"dense_bytes_per_step", allreduce_wire_bytes(dense_bucket_bytes_, comm_.world_size())},
                                  {"item_rows_per_step", exchanged_rows_ / std::max<int64_t>(1, steps)}};
    metrics_.write({{"event", "train_epoch"}, {"epoch", epoch}, {"steps", steps}, {"step", state.step},
                    {"loss", loss}, {"lr", lr_}, {"seqs_per_s", seq_per_s}, {"seconds", seconds},
                    {"phase_seconds", {{"sample", t_sample_}, {"forward", t_forward_}, {"backward", t_backward_},
                                       {"reduce", t_reduce_}, {"step", t_step_}}},
                    {"exchange", exchange}});
    log_line(root, detail::cat("epoch ", epoch, "/", config_.train.epochs, "  loss ", loss, "  ",
                               static_cast<int64_t>(seq_per_s), " seq/s  ", format_duration(seconds)));

    const bool last = epoch == config_.train.epochs || stop;
    const int every = config_.eval.every;
    if (last || (every > 0 && epoch % every == 0)) {
      auto valid = evaluate("valid");
      auto test = evaluate("test");
      log_eval(epoch, valid);
      log_eval(epoch, test);
      const double score = selection_score(valid);
      if (score > best_score) {
        best_score = score;
        summary.best_epoch = epoch;
        summary.best_valid = valid;
        summary.best_test = test;
        evals_without_gain = 0;
      } else {
        ++evals_without_gain;
      }
      summary.last = valid;
      summary.last.insert(summary.last.end(), test.begin(), test.end());
      // The metrics are all-reduced, so every rank takes the same decision.
      const int patience = config_.eval.patience;
      if (patience > 0 && evals_without_gain >= patience && !last) {
        stop = true;
        summary.early_stopped = true;
        metrics_.write({{"event", "early_stop"}, {"epoch", epoch}, {"best_epoch", summary.best_epoch},
                        {"patience", patience}});
        log_line(root, detail::cat("early stop after epoch ", epoch, ": no better valid score in ", patience,
                                   " evaluation(s) since epoch ", summary.best_epoch, " (eval.patience)"));
      }
    }
    if (checkpoints && (last || stop || epoch % config_.checkpoint.every == 0)) save(state);
  }
  summary.steps = state.step;
  summary.seconds = since(start);
  nlohmann::json done{{"event", "summary"}, {"epochs", summary.epochs}, {"steps", summary.steps},
                      {"seconds", summary.seconds}, {"best_epoch", summary.best_epoch},
                      {"early_stopped", summary.early_stopped}};
  for (const auto& r : summary.best_valid) {
    auto m = r.metrics.means();
    done["best_valid_" + r.protocol] = {{"hr@10", m["hr@10"]}, {"ndcg@10", m["ndcg@10"]}};
  }
  for (const auto& r : summary.best_test) {
    auto m = r.metrics.means();
    done["best_test_" + r.protocol] = {{"hr@10", m["hr@10"]}, {"ndcg@10", m["ndcg@10"]}};
  }
  metrics_.write(done);
  for (const auto& line : format_summary(summary.epochs, summary.steps, summary.seconds, summary.best_epoch,
                                         summary.best_valid, summary.best_test, config_.eval.ks))
    log_line(root, line);
  return summary;
}

}  // namespace sasrec
