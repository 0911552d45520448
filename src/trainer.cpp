// trainer.cpp: the training loop (see trainer.h for the phases).
#include "sasrec/trainer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <limits>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <set>
#include <thread>

#include <torch/csrc/autograd/profiler_legacy.h>

#include "sasrec/error.h"
#include "sasrec/log.h"
#include "sasrec/loss.h"
#include "sasrec/optimizer.h"
#include "sasrec/progress.h"
#include "sasrec/rng.h"
#include "sasrec/step_graph.h"
#include "sasrec/step_guard.h"

namespace sasrec {
namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

nlohmann::json eval_event(int64_t epoch, const EvalResult& r) {
  nlohmann::json j{{"event", "eval"}, {"epoch", epoch}, {"split", r.split}, {"protocol", r.protocol},
                   {"users", r.metrics.count()}, {"nonfinite_users", r.metrics.nonfinite_users()},
                   {"seconds", r.seconds}, {"users_per_s", r.users_per_s}};
  for (const auto& [k, v] : r.metrics.means()) j[k] = v;  // none when no user was evaluated
  return j;
}

// The train.* and data.* keys that change which steps a run takes: a resume
// with other values goes on along another path than the uninterrupted run.
constexpr const char* kTrajectoryKeys[] = {
    "data.path",       "data.length_buckets", "model.dropout",  "train.batch_size", "train.lr",
    "train.beta1",     "train.beta2",         "train.l2_emb",   "train.loss",       "train.negatives",
    "train.proposal",  "train.gbce_t",        "train.exchange", "train.item_optimizer", "train.seed"};

// Refuses a catalog with nothing to rank, and a sampled protocol asking for
// more negatives than some evaluated user has untouched items (it would rank
// against fewer, and different, items than configured).
void check_data_for_config(const Config& config, const SplitData& data, Communicator& comm) {
  const int64_t items = data.num_items();
  if (items < 2)
    SASREC_FAIL(Input, config.data.path, ": the catalog has ", items,
                " item(s): there is nothing to rank, and no loss has a negative to learn from (gbce and bce draw "
                "items the user did not touch). Use a store with 2 or more items");
  const auto& p = config.eval.protocols;
  if (std::find(p.begin(), p.end(), "sampled") == p.end()) return;
  const int64_t k = config.eval.sampled_negatives;
  int64_t short_users = 0, fewest = items;
  std::vector<int32_t> seen;
  for (int64_t u : data.holdout_users()) {
    const ItemSpan full = data.full(u);
    seen.assign(full.begin(), full.end());
    std::sort(seen.begin(), seen.end());
    const int64_t untouched = items - (std::unique(seen.begin(), seen.end()) - seen.begin());
    short_users += untouched <= k;
    fewest = std::min(fewest, untouched);
  }
  short_users = comm.allreduce_sum(short_users);
  if (short_users == 0) return;
  fewest = comm.allgather(torch::tensor({fewest}, torch::kInt64)).min().item<int64_t>();
  SASREC_FAIL(Config, config.where("eval.sampled_negatives"), "config key 'eval.sampled_negatives' (", k,
              ") is at or above the number of items that ", short_users,
              " user(s) with a held-out item never touched (the fewest: ", fewest, " of ", items,
              " items); the sampled protocol draws its negatives from those items, so it could not rank against ", k,
              " of them. ",
              fewest > 1 ? detail::cat("Set eval.sampled_negatives below ", fewest, ", or use eval.protocols: [full]")
                         : std::string("Use eval.protocols: [full]"));
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

// This rank's shard split as data.split says; the time split's quantile
// cutoffs are resolved over every rank's interaction times (the same
// collectives on every rank), and a split that leaves a period empty is refused.
std::unique_ptr<SplitData> load_split(const DataConfig& config, Communicator& comm) {
  const bool time = config.split == SplitKind::Time;
  Shard shard = load_shard(config.path, comm.rank(), comm.world_size(), /*with_timestamps=*/time);
  SplitOptions options;
  options.kind = config.split;
  options.targets = config.eval_targets;
  options.refit = config.refit;
  if (time) {
    const SortedTimes times(shard);
    auto count_at_most = [&](int64_t t) { return comm.allreduce_sum(times.count_at_most(t)); };
    options.test_from = resolve_cutoff(config.test_from, count_at_most);
    options.valid_from = config.valid_from.set() ? resolve_cutoff(config.valid_from, count_at_most) : options.test_from;
    if (options.valid_from > options.test_from)
      SASREC_FAIL(Config, "data.valid_from (", config.valid_from.text, " = ", options.valid_from,
                  ") comes after data.test_from (", config.test_from.text, " = ", options.test_from,
                  "); move valid_from earlier");
  }
  auto data = std::make_unique<SplitData>(std::move(shard), options);
  if (!time) return data;
  auto train = torch::zeros({3}, torch::kInt64);  // train interactions, valid cases, test cases: over all ranks
  for (int64_t u = 0; u < data->num_users(); ++u) train[0] += data->train(u).size;
  train[1] = static_cast<int64_t>(data->cases(Holdout::Valid).size());
  train[2] = static_cast<int64_t>(data->cases(Holdout::Test).size());
  comm.allreduce_sum(train);
  const int64_t valid_cases = train[1].item<int64_t>(), test_cases = train[2].item<int64_t>();
  log_line(comm.is_root(), detail::cat("time split: train before ", options.refit ? options.test_from : options.valid_from,
                                       options.refit ? " (data.refit)" : "", ", valid from ", options.valid_from,
                                       " (data.valid_from ", config.valid_from.text, "), test from ", options.test_from,
                                       " (data.test_from ", config.test_from.text, "): ", train[0].item<int64_t>(),
                                       " train interactions, ", valid_cases, " valid and ", test_cases, " test cases (",
                                       eval_targets_name(config.eval_targets), " targets)"));
  if (test_cases == 0)
    SASREC_FAIL(Config, config.path, ": no interaction at or after data.test_from (", config.test_from.text, " = ",
                options.test_from, ") follows an earlier one of its user: nothing to test; move data.test_from earlier");
  if (valid_cases == 0 && !options.refit)
    SASREC_FAIL(Config, config.path, ": no interaction between data.valid_from (", config.valid_from.text, " = ",
                options.valid_from, ") and data.test_from (", options.test_from,
                ") follows an earlier one of its user: nothing to validate on; move data.valid_from earlier "
                "(or set data.refit: true)");
  return data;
}

// NDCG@10 of the first protocol, the model-selection figure (MRR where 10
// is not among eval.ks); -1 when no user was evaluated (no figure at all).
double selection_score(const std::vector<EvalResult>& valid) {
  if (valid.empty() || valid.front().metrics.count() == 0) return -1;
  auto m = valid.front().metrics.means();
  auto it = m.find("ndcg@10");
  return it != m.end() ? it->second : m.at("mrr");
}

// output.profile: libtorch's Chrome trace of some steps, recorded into an
// AtomicOutput's temporary and renamed into place when the recording ends,
// so the file is there, whole, or not at all.
class ProfileTrace {
 public:
  ProfileTrace(const std::string& path, const std::vector<RunInput>& inputs)
      : out_(path, "output.profile", inputs),
        record_(std::make_unique<torch::autograd::profiler::RecordProfile>(out_.temp_path())) {}
  // Ends the recording, writes the file; returns the line to log. A failure
  // here costs the profile, not the run.
  std::string finish(int64_t first, int64_t last) {
    record_.reset();  // libtorch writes the trace now
    struct stat st {};
    if (::stat(out_.temp_path().c_str(), &st) != 0 || st.st_size == 0) {
      out_.discard();
      return "output.profile: libtorch wrote no trace, so " + out_.path() + " was not written";
    }
    try {
      out_.commit();
    } catch (const Error& e) {
      return std::string("output.profile: ") + e.what() + "; training goes on without it";
    }
    return detail::cat("wrote the profile of steps ", first, "-", last, " to ", out_.path());
  }

 private:
  AtomicOutput out_;  // declared first: destroyed after the recording, so it removes what that wrote
  std::unique_ptr<torch::autograd::profiler::RecordProfile> record_;
};

}  // namespace

std::unique_ptr<FusedAdam> make_optimizer(SASRec& model, const TrainConfig& train) {
  // The authors' penalty l2_emb * (||M||^2 + ||P||^2) / 2 (TF's l2_regularizer on
  // both tables) has the gradient l2_emb * W: Adam's weight decay l2_emb on M and P.
  std::vector<torch::Tensor> tables{model->item_weight(), model->position_weight()}, rest;
  for (auto& p : model->parameters())
    if (!p.is_same(model->item_weight()) && !p.is_same(model->position_weight())) rest.push_back(p);
  auto options = [&](double decay) {
    return std::make_unique<torch::optim::AdamOptions>(
        torch::optim::AdamOptions(train.lr).betas({train.beta1, train.beta2}).weight_decay(decay));
  };
  std::vector<torch::optim::OptimizerParamGroup> groups;
  groups.emplace_back(tables, options(train.l2_emb));
  groups.emplace_back(rest, options(0));
  return std::make_unique<FusedAdam>(groups, torch::optim::AdamOptions(train.lr));
}

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

  data_ = load_split(config_.data, comm_);
  global_trainable_ = comm_.allreduce_sum(static_cast<int64_t>(data_->trainable_users().size()));
  if (global_trainable_ == 0)
    SASREC_FAIL(Input, config_.data.path, ": no user has 2 or more training interactions",
                config_.data.split == SplitKind::Time ? " before the cutoff (data.valid_from)" : "",
                "; nothing to train on");
  const int64_t per_step = static_cast<int64_t>(config_.train.batch_size) * comm_.world_size();
  steps_per_epoch_ = (global_trainable_ + per_step - 1) / per_step;
  check_data_for_config(config_, *data_, comm_);
  item_map_ = read_item_map_fingerprint(config_.data.path);

  // Before the model exists: a config that cannot fit stops here, on every rank alike.
  std::tie(memory_plan_, memory_budget_) = plan_rank_memory(config_, *data_, comm_, device_);
  for (const auto& line : format_memory_plan(memory_plan_, memory_budget_)) log_line(comm_.is_root(), line);
  check_memory_plan(memory_plan_, memory_budget_);

  model_ = SASRec(SASRecOptions::from(config_, data_->num_items(), data_->num_users_total()));
  model_->to(device_);
  broadcast_parameters();

  optimizer_ = make_optimizer(model_, config_.train);
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
  // runtime.cuda_graphs: the step's forward and backward captured per token
  // bucket; the item table is then read whole (step_graph.h).
  if (config_.runtime.cuda_graphs) {
    if (!device_.is_cuda())
      SASREC_FAIL(Config, "runtime.cuda_graphs is true but this run is on ", device_.str(),
                  ": CUDA graphs need a CUDA device; set runtime.cuda_graphs: false");
    graph_buckets_ = token_buckets(static_cast<int64_t>(config_.train.batch_size) * config_.model.maxlen);
    graph_batch_ = padded_batch(graph_buckets_, config_.train.batch_size, config_.model.maxlen);
    graph_ = std::make_unique<StepGraph>(model_->parameters(), [this](const StepInputs& in, const torch::Tensor& w) {
      const SampledTerms terms{log_kq_.defined() ? log_kq_.index_select(0, in.pos) : log_kq_,
                               log_kq_.defined() ? in.shared_log_q : log_kq_, gbce_beta_};
      auto features = model_->forward_packed(in.packing, in.users);
      return loss_sum_rows(config_.train.loss, features, model_->item_weight(), in.pos, in.neg, in.shared, terms, w);
    });
  }
  item_rows_ = config_.train.loss != LossKind::Ce && !graph_;
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
  if (batch.targets > 0 && graph_) {
    // runtime.cuda_graphs: forward, loss and backward replayed as one graph (step_graph.h).
    RECORD_USER_SCOPE("phase::forward");
    const StepInputs host =
        batch.inputs.staging.defined() ? batch.inputs : stage_inputs(batch, config_.model.maxlen, false);
    const PaddedInputs padded =
        pad_inputs(host, bucket_for(graph_buckets_, batch.targets), graph_batch_, config_.model.maxlen);
    auto sum = graph_->run(padded, 1.0 / static_cast<double>(std::max<int64_t>(1, global_targets)));
    loss_sum_value = sum.item<double>();
    t_forward_ += since(t);
  } else if (batch.targets > 0) {
    torch::Tensor sum;
    {
      RECORD_USER_SCOPE("phase::forward");
      // Only items go through the network, packed (packing.h); the targets
      // are at the same places as the inputs, so the target rows are the
      // same rows. The sampler threads packed and staged the batch: one copy
      // to the device (asynchronous from pinned memory on CUDA).
      StepInputs in = (batch.inputs.staging.defined() ? batch.inputs : stage_inputs(batch, config_.model.maxlen, false))
                          .to(device_);
      SASREC_CHECK(in.packing.items.size(0) == batch.targets, "batch ", batch.index, ": ", batch.targets,
                   " targets but ", in.packing.items.size(0), " input items");
      Packing& packed = in.packing;
      torch::Tensor &pos = in.pos, &neg = in.neg, &shared = in.shared;
      // log-Q of the popularity proposal, looked up by GLOBAL item id (before the remap below).
      const SampledTerms terms{log_kq_.defined() ? log_kq_.index_select(0, pos) : log_kq_,
                               log_kq_.defined() ? in.shared_log_q : log_kq_, gbce_beta_};
      // The sampled losses read M only at the batch's items: through a copy
      // of those rows, so the gradient is [U,D], not [I+1,D] (item_rows.h).
      if (item_rows_) rows = gather_item_rows(model_->item_weight(), {&packed.items, &pos, &neg, &shared});
      auto features = model_->forward_packed(packed, in.users, rows.table);  // [N,D]
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
    const std::string what = detail::cat("eval ", r.split, "/", r.protocol, " epoch ", epoch, ": ");
    if (r.metrics.count() == 0) {
      log_line(comm_.is_root(), what + "no user to evaluate (a user needs 3 or more interactions to have a valid "
                                       "and a test item); no figure");
      continue;
    }
    // The cutoff nearest to 10 on the terminal; the metrics file has them all.
    const int k = nearest_cutoff(config_.eval.ks);
    auto m = r.metrics.means();
    const std::string at = "@" + std::to_string(k);
    const int64_t bad = r.metrics.nonfinite_users();
    log_line(comm_.is_root(),
             detail::cat(what, "HR", at, " ", m["hr" + at], "  NDCG", at, " ", m["ndcg" + at], "  MRR ", m["mrr"], "  (",
                         r.metrics.count(), " users, ", format_duration(r.seconds), ", ",
                         static_cast<int64_t>(r.users_per_s), " users/s)",
                         bad ? detail::cat("; ", bad, " user(s) with NaN or Inf scores, ranked below every candidate: "
                                                      "the model is not finite")
                             : std::string()));
  }
}

std::vector<EvalResult> Trainer::evaluate(const std::string& split) { return evaluator_->evaluate(model_, split); }

void Trainer::load_model(const std::string& checkpoint) {
  load_checkpoint(checkpoint, model_, nullptr, checkpoint_match());
}

CheckpointMatch Trainer::checkpoint_match() const { return CheckpointMatch{config_.data.path, item_map_}; }

std::vector<RunInput> Trainer::run_inputs(const std::string& resume) const {
  std::vector<RunInput> in{run_input("data.path", config_.data.path)};
  if (!config_.source.empty()) in.push_back(run_input("the config", config_.source));
  if (!resume.empty()) in.push_back(run_input("the checkpoint resumed from", resume));
  return in;
}

void Trainer::claim_checkpoint_dir(const CheckpointDir& dir, const std::string& run_id, bool resumed) {
  const std::vector<std::string> others = dir.foreign(resumed ? run_id : "");
  if (others.empty()) return;
  if (!resumed && config_.checkpoint.overwrite) {
    const std::string aside = dir.move_aside();
    log_line(true, detail::cat("checkpoint.overwrite: moved ", others.size(), " checkpoint(s) of an earlier run from ",
                               dir.dir(), " to ", aside));
    return;
  }
  std::set<std::string> names;
  for (const auto& path : others) {
    const std::string id = checkpoint_run_id(path);
    names.insert(id.empty() ? "unnamed (written before run ids)" : id);
  }
  std::string ids;
  for (const auto& id : names) ids += (ids.empty() ? "" : ", ") + id;
  if (resumed)
    SASREC_FAIL(Input, config_.where("checkpoint.dir"), "checkpoint.dir '", dir.dir(), "' holds ", others.size(),
                " checkpoint(s) of another run (run ", ids, ", newest ", others.back(), ") than the one resumed (run ",
                run_id, "); its pruning (checkpoint.keep) would delete them. Move them away or choose another "
                "checkpoint.dir");
  SASREC_FAIL(Input, config_.where("checkpoint.dir"), "checkpoint.dir '", dir.dir(), "' holds ", others.size(),
              " checkpoint(s) of another run (run ", ids, ", newest ", others.back(),
              "); a fresh run there would mix its files with them and prune them. Set checkpoint.resume: auto to "
              "continue that run, choose another checkpoint.dir, or set checkpoint.overwrite: true to move them aside");
}

std::vector<std::string> Trainer::trajectory_differences(const TrainState& loaded) const {
  std::vector<std::string> out;
  if (loaded.config_yaml.empty()) return out;
  const Config then = parse_config(loaded.config_yaml, "the checkpoint's config");
  for (const char* key : kTrajectoryKeys) {
    const std::string a = config_value(config_, key), b = config_value(then, key);
    if (a != b) out.push_back(detail::cat(key, " is ", a, " here but ", b, " in the checkpoint"));
  }
  if (loaded.world_size > 0 && loaded.world_size != comm_.world_size())
    out.push_back(detail::cat("the world size is ", comm_.world_size(), " here but ", loaded.world_size,
                              " in the checkpoint"));
  return out;
}

TrainSummary Trainer::fit() {
  const bool root = comm_.is_root();
  const StepGuard guard;  // SIGTERM / SIGINT: finish the step, checkpoint, return
  TrainSummary summary;
  TrainState state;
  state.config_yaml = to_yaml(config_);

  // Rank 0 owns checkpoint.dir for the whole run, before anything reads it.
  std::unique_ptr<FolderLock> lock;
  std::unique_ptr<CheckpointDir> checkpoints;
  if (!config_.checkpoint.dir.empty() && root) {
    checkpoints = std::make_unique<CheckpointDir>(config_.checkpoint.dir, config_.checkpoint.keep);
    lock = std::make_unique<FolderLock>(config_.checkpoint.dir, "checkpoint.dir");
    if (lock->previous_pid())
      log_line(root, detail::cat("checkpoint.dir: took over the lock of pid ", lock->previous_pid(),
                                 ", which is no longer running"));
    if (const int stale = checkpoints->remove_stale_temporaries())
      log_line(root, detail::cat("removed ", stale, " unfinished checkpoint file(s) of a killed run from ",
                                 config_.checkpoint.dir));
  }

  const std::string resume = resume_path();
  std::vector<std::string> differences;
  if (!resume.empty()) {
    TrainState loaded = load_checkpoint(resume, model_, optimizer_.get(), checkpoint_match());
    state.epoch = loaded.epoch;
    state.step = loaded.step;
    state.batch = loaded.batch;
    state.dropout_calls = loaded.dropout_calls;
    state.run_id = loaded.run_id;
    SASREC_CHECK(state.batch < steps_per_epoch_, resume, ": resumes at batch ", state.batch, " of an epoch of ",
                 steps_per_epoch_, " steps; it was written with another train.batch_size or rank count");
    log_line(root, detail::cat("resumed from ", resume, " after epoch ", state.epoch, ", step ", state.step,
                               state.batch ? detail::cat(" (batch ", state.batch, " of epoch ", state.epoch + 1, ")")
                                           : std::string()));
    differences = trajectory_differences(loaded);
    for (const auto& d : differences)
      log_line(root, "resume: " + d + "; the run goes on along another path than an uninterrupted one would");
  }
  const bool resumed = !resume.empty();
  if (checkpoints) claim_checkpoint_dir(*checkpoints, state.run_id, resumed);
  if (state.run_id.empty()) state.run_id = new_run_id();  // fresh, or resumed from a file without one
  summary.run_id = state.run_id;
  state.config_hash = config_hash(config_);
  state.world_size = comm_.world_size();
  state.item_map = item_map_;
  state.data_path = config_.data.path;

  const std::vector<RunInput> inputs = run_inputs(resume);
  if (root) {
    metrics_ = MetricsWriter(config_.output.metrics, /*append=*/resumed, inputs);
    if (!metrics_.moved_aside().empty())
      log_line(root, detail::cat("output.metrics: ", config_.output.metrics, " held another run's events; moved to ",
                                 metrics_.moved_aside()));
  }
  // output.profile: checked now, written at step kProfileLast (or the run's end).
  std::vector<RunInput> profile_inputs = inputs;
  profile_inputs.push_back(run_input("output.metrics", config_.output.metrics));
  if (root && !config_.output.profile.empty()) check_output(config_.output.profile, "output.profile", profile_inputs);
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
                  {"resumed_from", resume}, {"run_id", state.run_id},
                  {"config_hash", fingerprint_hex(state.config_hash)}, {"item_map", fingerprint_hex(item_map_)},
                  {"resume_differences", differences}, {"config", state.config_yaml}});
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
  so.stage = true;  // packing and staging on the sampler threads
  so.pin_memory = device_.is_cuda() && config_.runtime.pin_memory;
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
  std::unique_ptr<ProfileTrace> profile;
  auto finish_profile = [&](int64_t last_step) {
    if (!profile) return;
    progress.clear();
    log_line(root, profile->finish(kProfileFirst, last_step));
    profile.reset();
  };
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
    int64_t targets = 0, sequences = 0, steps = 0, taken = 0;  // taken: steps not skipped (the same on every rank)
    int stop_signal = 0;  // the step guard's request, once every rank knows of it
    for (int64_t s = first; s < steps_per_epoch_; ++s) {
      // output.profile: a Chrome trace of steps kProfileFirst..kProfileLast, op by op.
      if (root && !config_.output.profile.empty() && state.step + 1 == kProfileFirst)
        profile = std::make_unique<ProfileTrace>(config_.output.profile, profile_inputs);
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
      if (state.step + 1 == kProfileLast) finish_profile(kProfileLast);
      if (!outcome.skipped) targets += batch.targets, ++taken;
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
      finish_profile(state.step);
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
    const double seq_per_s = sums[2] / std::max(1e-9, seconds);
    state.epoch = epoch;
    summary.epochs = epoch;
    // No step taken (all skipped): there is no loss, not a loss of 0.
    const nlohmann::json loss = taken > 0 ? nlohmann::json(sums[0] / std::max(1.0, sums[1])) : nlohmann::json();
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
    if (taken == 0) {
      // Nothing was learnt in a whole epoch: the parameters make every step
      // non-finite, and going on would skip every step again.
      log_line(root, detail::cat("epoch ", epoch, "/", config_.train.epochs, "  no step taken: all ", steps,
                                 " step(s) were skipped for non-finite values (train.on_nonfinite: skip), so there "
                                 "is no loss"));
      SASREC_FAIL(Check, "epoch ", epoch, ": every one of its ", steps, " step(s) was skipped for a non-finite loss or "
                  "gradient (train.on_nonfinite: skip): the training diverged and cannot go on",
                  summary.checkpoint.empty() ? std::string() : "; the last checkpoint is " + summary.checkpoint,
                  ". Lower train.lr (", config_.train.lr, ") or check the data");
    }
    log_line(root, detail::cat("epoch ", epoch, "/", config_.train.epochs, "  loss ", loss.get<double>(), "  ",
                               static_cast<int64_t>(seq_per_s), " seq/s  ", format_duration(seconds),
                               taken < steps ? detail::cat("  (", steps - taken, " of ", steps,
                                                           " steps skipped: non-finite)")
                                             : std::string()));

    const bool last = epoch == config_.train.epochs || stop;
    const int every = config_.eval.every;
    if (last || (every > 0 && epoch % every == 0)) {
      // data.refit trains on valid: no valid figures, and the latest evaluation is the one reported.
      const bool refit = config_.data.refit;
      auto valid = refit ? std::vector<EvalResult>{} : evaluate("valid");
      auto test = evaluate("test");
      log_eval(epoch, valid);
      log_eval(epoch, test);
      const double score = refit ? static_cast<double>(epoch) : selection_score(valid);
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
  finish_profile(state.step);
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
  if (summary.best_epoch == 0 && !summary.last.empty())
    log_line(root, "no evaluation had a user to evaluate, so there is no best epoch and no figure");
  return summary;
}

}  // namespace sasrec
